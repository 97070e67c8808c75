"""The installed VBoxManage command as a user runs it: Cli is one temp VBOX_USER_HOME with its own
runtime folder, the manager started on demand; it runs VBoxManage and snapshots the settings files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from services.manager.client import ManagerClient, daemon_running


def installed(command: str) -> str:
    """The console script of this interpreter's install; missing is a failure (pip install -e .)."""
    beside = os.path.join(os.path.dirname(sys.executable), command)
    found = beside if os.access(beside, os.X_OK) else shutil.which(command)
    if not found:
        pytest.fail(f"{command} is not installed: run scripts/setup (pip install -e .)", pytrace=False)
    return found


class Cli:
    """One settings home (short path: the manager's unix socket lives in it) with its own runtime folder."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="hbx-", dir="/tmp"))
        self.home = self.root / "home"
        self.work = self.root / "work"
        for folder in (self.home, self.work, self.root / "run"):
            folder.mkdir(mode=0o700)
        self.env = {**os.environ, "VBOX_USER_HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.root / "run"),
                    "HEADBOX_IDLE_EXIT": "600"}
        self.vboxmanage = installed("VBoxManage")
        self.vboxheadless = installed("VBoxHeadless")

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.vboxmanage, *args], cwd=cwd or self.work, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def __call__(self, *args: str, cwd: Path | None = None) -> str:
        """VBoxManage that must succeed; its standard output."""
        done = self.run(*args, cwd=cwd)
        assert done.returncode == 0, f"VBoxManage {' '.join(args)}: {done.returncode}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        return done.stdout

    def fails(self, *args: str) -> str:
        """VBoxManage that must fail as a user mistake: exit 1, nothing on stdout, exactly one line
        `VBoxManage: error: ...` on stderr. Returns the message."""
        done = self.run(*args)
        assert done.returncode == 1, f"VBoxManage {' '.join(args)} exited {done.returncode}: {done.stderr}"
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("VBoxManage: error: "), done.stderr
        assert done.stdout == ""
        return lines[0][len("VBoxManage: error: "):]

    def settings_files(self) -> dict[str, bytes]:
        """Every settings file (Headbox.xml, the .vbox files, wherever they live under the root)."""
        return {str(path): path.read_bytes() for path in sorted(self.root.rglob("*"))
                if path.is_file() and path.suffix in (".xml", ".vbox", ".vbox-prev", ".xml-prev")}

    def showvminfo(self, vm: str) -> dict[str, str]:
        info = {}
        for line in self("showvminfo", vm, "--machinereadable").splitlines():
            key, _, value = line.partition("=")
            info[key.strip('"')] = value.strip('"')
        return info

    def close(self) -> None:
        if daemon_running(str(self.home)):
            # The manager refuses to shut down while VMs run (a failed test may leave one running).
            for line in self.run("list", "runningvms").stdout.splitlines():
                self.run("controlvm", line.rsplit(" {", 1)[0].strip('"'), "poweroff")
            client = ManagerClient(home=str(self.home), timeout_ms=30000)
            try:
                client.request("shutdown")
            except Exception:
                pass
            finally:
                client.close()
            deadline = time.monotonic() + 30
            while daemon_running(str(self.home)) and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
