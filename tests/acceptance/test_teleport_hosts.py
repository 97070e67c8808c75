"""Teleporting between two hosts as the manual shows it, with VBoxManage: two network namespaces joined by
a veth pair, each with its own manager (own settings home, own supervisord). The guest prints a counter
with a checksum of a RAM buffer to COM1 (tests/guests/programs/counter.asm as the VM's BIOS image);
after `controlvm teleport` the counter carries on in the target's log without a gap or repeat."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from services.manager.client import ManagerClient, daemon_running
from services.manager.errors import ManagerError
from tests.guests.build import build_program, counter_expected_lines
from tests.support.vboxmanage import installed

BUF_DWORDS = 8192
TELEPORT_PORT = 6000
PASSWORD = "move-me"


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"


@pytest.fixture(scope="module")
def hosts():
    """Two namespaces, 10.77.N.1 and 10.77.N.2 on a veth pair; nothing else is reachable from them."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.fail("the two-host teleport test needs root and iproute2 (ip netns)", pytrace=False)
    tag = uuid.uuid4().hex[:6]
    names = (f"hbsrc{tag}", f"hbdst{tag}")
    net = 77
    ip("netns", "add", names[0])
    ip("netns", "add", names[1])
    try:
        ip("link", "add", f"hbv{tag}a", "netns", names[0], "type", "veth", "peer", "name", f"hbv{tag}b",
           "netns", names[1])
        for index, name in enumerate(names):
            veth = f"hbv{tag}{'ab'[index]}"
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "addr", "add", f"10.{net}.0.{index + 1}/24", "dev", veth)
            ip("-n", name, "link", "set", veth, "up")
        yield [Host(name, f"10.{net}.0.{index + 1}") for index, name in enumerate(names)]
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Host:
    """One host: a network namespace with its own settings home and runtime folder."""

    def __init__(self, netns: str, address: str):
        self.netns, self.address = netns, address
        self.root = Path(tempfile.mkdtemp(prefix="hbt-", dir="/tmp"))
        self.home = self.root / "home"
        for folder in (self.home, self.root / "run"):
            folder.mkdir(mode=0o700)
        self.env = {**os.environ, "VBOX_USER_HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.root / "run"),
                    "HEADBOX_IDLE_EXIT": "600"}
        self.vboxmanage = installed("VBoxManage")

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, self.vboxmanage, *args]

    def __call__(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"[{self.netns}] VBoxManage {' '.join(args)}: {done.returncode}\n{done.stderr}"
        return done.stdout

    def fails(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 1, f"[{self.netns}] VBoxManage {' '.join(args)} exited {done.returncode}"
        return done.stderr

    def state(self, vm: str) -> str:
        for line in self("showvminfo", vm, "--machinereadable").splitlines():
            if line.startswith("VMState="):
                return line.split("=", 1)[1].strip('"')
        raise AssertionError("showvminfo has no VMState")

    def close(self) -> None:
        # The manager's socket is a file: reachable from outside the namespace.
        if daemon_running(str(self.home)):
            client = ManagerClient(home=str(self.home))
            try:
                deadline = time.monotonic() + 30
                while True:      # a VM that is still starting or stopping refuses the shutdown: retry
                    for row in client.request("list", what="runningvms"):
                        try:
                            client.request("controlvm", vm=row["uuid"], action="poweroff")
                        except ManagerError:
                            pass
                    try:
                        client.request("shutdown")
                        break
                    except ManagerError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
            finally:
                client.close()
            deadline = time.monotonic() + 20
            while daemon_running(str(self.home)) and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


def counter_vm(host: Host, image: Path, log: Path) -> None:
    host("createvm", "--name", "counter", "--register")
    host("modifyvm", "counter", "--memory", "64", "--accel", "tcg", "--boot1", "dvd",
         "--uart1", "0x3F8", "4", "--uartmode1", "file", str(log))
    host("setextradata", "counter", "VBoxInternal/Devices/pcbios/0/Config/BiosRom", str(image))


def lines_of(*logs: Path) -> list[str]:
    text = b"".join(log.read_bytes() if log.exists() else b"" for log in logs).decode("latin-1")
    return [line for line in text.split("\n")[:-1] if line.startswith("n=")]


def wait_lines(logs, count: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = lines_of(*logs)
        if len(lines) >= count:
            return lines
        time.sleep(0.2)
    raise AssertionError(f"only {len(lines_of(*logs))} counter lines after {timeout} s")


def test_teleport_between_two_hosts_with_vboxmanage(hosts, tmp_path):
    source, target = hosts
    image = tmp_path / "counter.bin"
    image.write_bytes(build_program("counter", {"BUF_DWORDS": BUF_DWORDS, "OUT_PORT": 0x3F8}))
    source_log, target_log = tmp_path / "source-com1.log", tmp_path / "target-com1.log"
    waiting = None
    try:
        counter_vm(source, image, source_log)
        counter_vm(target, image, target_log)
        target("modifyvm", "counter", "--teleporter", "on", "--teleporterport", str(TELEPORT_PORT),
               "--teleporteraddress", target.address, "--teleporterpassword", PASSWORD)
        source("startvm", "counter", "--type", "headless")
        wait_lines([source_log], 20, 60)
        # The target's startvm waits for the VM (as VirtualBox's does) and ends once it runs.
        waiting = subprocess.Popen(target.argv("startvm", "counter", "--type", "headless"), env=target.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while target.state("counter") != "teleportingin" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert target.state("counter") == "teleportingin"

        # A wrong password: refused, both ends carry on.
        assert "password" in source.fails("controlvm", "counter", "teleport", "--host", target.address,
                                          "--port", str(TELEPORT_PORT), "--password", "wrong").lower()
        assert source.state("counter") == "running" and target.state("counter") == "teleportingin"

        out = source("controlvm", "counter", "teleport", "--host", target.address, "--port", str(TELEPORT_PORT),
                     "--password", PASSWORD)
        assert "100%" in out
        stdout, stderr = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, stderr
        # As VirtualBox's: it says that it waits, then the teleport's progress.
        assert 'VM "counter" is waiting to be teleported in' in stdout, stdout
        assert "100%" in stdout and 'VM "counter" has been successfully started.' in stdout, stdout
        assert target.state("counter") == "running"
        deadline = time.monotonic() + 20
        while source.state("counter") != "poweroff" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert source.state("counter") == "poweroff", "the source VM powers off after the hand-over"
        moved_at = len(lines_of(source_log))
        lines = wait_lines([source_log, target_log], moved_at + 20, 60)
        assert lines == counter_expected_lines(len(lines), BUF_DWORDS), \
            "the counter (and its RAM checksum) must carry on on the target without a gap or repeat"
        assert len(lines_of(target_log)) >= 15
    finally:
        if waiting is not None and waiting.poll() is None:
            waiting.kill()
        source.close()
        target.close()
