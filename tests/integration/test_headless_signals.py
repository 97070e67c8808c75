"""Issue 11, defect 6: the demo runner stopped with SIGTERM (as timeout, systemd or kill do) or
SIGHUP once left its vCPU, device and RDP processes running and the RDP port held; now the whole
group is gone within 5 s, the port is free and the VM's runtime folder removed."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from services.demo.linux_iso import linux_iso
from tests.waiting import free_port, wait_for


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_the_demo_stops_its_whole_group_on_a_signal(signum, tmp_path):
    linux_iso()                                     # built and cached before the clock starts
    port = free_port()
    name = "sig" + uuid.uuid4().hex[:6]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    runner = subprocess.Popen([sys.executable, "-m", "services.headless", "--demo", "--name", name,
                               "--memory", "128", "--rdp-port", str(port), "--state-dir", str(tmp_path / "state")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: port_taken(port), 60, "the demo's RDP server listening", [runner])
        children = children_of(runner.pid)
        assert len(children) == 3, children          # vcpu, devices, vrdp
        runner.send_signal(signum)
        started = time.monotonic()
        runner.wait(10)
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children), 5 - (time.monotonic() - started),
                 "the VM's processes gone")
        assert not port_taken(port)
        assert not os.path.exists(tmp_path / "headbox" / name)
        assert not any(entry.startswith(f"headbox-{name}-") for entry in os.listdir("/dev/shm"))
        assert runner.returncode == 143 and "Traceback" not in runner.stderr.read()
    finally:
        if runner.poll() is None:
            runner.kill()
