"""The installed VBoxManage command as a user runs it: a temp VBOX_USER_HOME, the manager started on
demand; Cli (used by the other test_vboxmanage_* modules) runs it and snapshots the settings files."""

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


@pytest.fixture
def cli():
    home = Cli()
    try:
        yield home
    finally:
        home.close()


def test_version_and_usage_need_no_manager(cli):
    assert cli("--version").strip() == "0.1.0"
    assert cli("-q", "--version").strip() == "0.1.0"
    for alias in ("VBoxHeadless", "VBoxVRDP"):
        done = subprocess.run([installed(alias), "--version"], capture_output=True, text=True, check=False)
        assert (done.returncode, done.stdout) == (0, "0.1.0\n")
    done = cli.run()
    assert done.returncode == 1 and done.stdout.startswith("Usage: VBoxManage")
    assert not daemon_running(str(cli.home))


def test_first_command_starts_the_manager_and_prints_no_logo(cli):
    assert cli("list", "vms") == ""
    assert daemon_running(str(cli.home))
    out = cli("createvm", "--name", "first", "--register")
    lines = out.splitlines()
    assert lines[0] == "Virtual machine 'first' is created and registered."
    assert lines[1].startswith("UUID: ")
    uuid = lines[1][len("UUID: "):]
    assert cli("list", "vms") == f'"first" {{{uuid}}}\n'
    assert "ID:          WindowsXP\n" in cli("list", "ostypes")


def test_createhd_progress_and_relative_filename(cli):
    out = cli("createhd", "--filename", "disk", "--size", "16")
    assert out.splitlines()[0] == "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%"
    assert out.splitlines()[1].startswith("Medium created. UUID: ")
    assert (cli.work / "disk.vdi").is_file()      # made absolute against the caller's cwd, .vdi appended
    out = cli("createmedium", "disk", "--filename", "fixed.vdi", "--size", "4", "--variant", "Fixed", "--format", "VDI")
    assert out.splitlines()[1].startswith("Medium created. UUID: ")
    assert (cli.work / "fixed.vdi").stat().st_size >= 4 * 1024 * 1024      # Fixed: every block allocated


def test_extradata_and_properties(cli):
    cli("createvm", "--name", "vm", "--register")
    assert cli("getextradata", "vm", "Some/Key") == "No value set!\n"
    cli("setextradata", "vm", "Some/Key", "a value")
    cli("setextradata", "global", "Other/Key", "1")
    assert cli("getextradata", "vm", "Some/Key") == "Value: a value\n"
    assert "Key: Some/Key, Value: a value\n" in cli("getextradata", "vm", "enumerate")
    assert cli("getextradata", "global", "Other/Key") == "Value: 1\n"
    cli("setextradata", "vm", "Some/Key")
    assert cli("getextradata", "vm", "Some/Key") == "No value set!\n"
    cli("setproperty", "vrdpauthlibrary", "VBoxAuthSimple")
    assert "VBoxAuthSimple" in cli("list", "systemproperties")
    cli("setproperty", "machinefolder", "machines")
    assert f"Default machine folder:           {cli.work / 'machines'}\n" in cli("list", "systemproperties")
    created = cli("createvm", "--name", "placed", "--register")
    assert f"Settings file: '{cli.work / 'machines'}/" in created


def test_modifyvm_shows_in_showvminfo(cli):
    cli("createvm", "--name", "vm", "--ostype", "Debian_64", "--register")
    cli("modifyvm", "vm", "--memory", "300", "--cpus", "2", "--boot1", "disk", "--boot2", "none", "--nic2", "intnet",
        "--vrdp", "on", "--vrdpport", "5000,5010-5012", "--vrdeproperty", "Security/Method=TLS",
        "--uart1", "0x3F8", "4", "--uartmode1", "file", "com1.log", "--cpuid", "1", "0", "0", "0", "0",
        "--teleporter", "on", "--teleporterport", "6000", "--teleporterpassword", "Tel3porter-Secret")
    info = cli.showvminfo("vm")
    assert (info["memory"], info["cpus"], info["boot1"], info["boot2"], info["nic2"]) == \
        ("300", "2", "disk", "none", "intnet")
    assert (info["vrde"], info["vrdeports"], info["vrdeport"]) == ("on", "5000,5010-5012", "-1")
    assert info["vrdeproperty[Security/Method]"] == "TLS"
    assert info["uart1"] == "0x03f8,4" and info["uartmode1"] == f"file,{cli.work / 'com1.log'}"
    assert info["teleporterenabled"] == "on" and info["teleporterport"] == "6000"
    human = cli("showvminfo", "vm")
    assert "Memory size:                 300MB\n" in human
    assert "VRDE:                        enabled (Address 0.0.0.0, Ports 5000,5010-5012," in human
    assert b"Tel3porter-Secret" not in b"".join(cli.settings_files().values())    # stored hashed


def test_register_unregister_and_media(cli):
    created = cli("createvm", "--name", "loose", "--basefolder", "vms")
    assert created.startswith("Virtual machine 'loose' is created.\n")
    settings_file = created.splitlines()[2].split("'")[1]
    assert settings_file.startswith(str(cli.work / "vms"))
    assert cli("list", "vms") == ""
    cli("registervm", os.path.relpath(settings_file, cli.work))
    assert '"loose"' in cli("list", "vms")
    cli("createhd", "--filename", "scratch.vdi", "--size", "8")
    cli("closemedium", "disk", "scratch.vdi")
    assert "scratch.vdi" not in cli("list", "hdds") and (cli.work / "scratch.vdi").exists()
    cli("openmedium", "disk", "scratch.vdi")
    assert str(cli.work / "scratch.vdi") in cli("list", "hdds")
    cli("closemedium", "disk", "scratch.vdi", "--delete")
    assert not (cli.work / "scratch.vdi").exists()
    cli("unregistervm", "loose", "--delete")
    assert cli("list", "vms") == "" and not os.path.exists(settings_file)
