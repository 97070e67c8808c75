"""The vCPU process: SeaBIOS runs in it, its RAM is a private named region, it idles without
burning a core, and its control socket pauses, snapshots, resumes and powers it off."""

import os
import subprocess
import time
import uuid

import pytest

from services.ipc import ops
from services.ipc.control import ControlClient, ControlError
from services.ipc.naming import endpoint, shm_name
from services.ipc.spec import LaunchSpec
from tests.conftest import require_kvm
from tests.support.vm_processes import start


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(params=["tcg", "kvm"])
def vcpu(request, tmp_path, monkeypatch):
    accel = request.param
    if accel == "kvm":
        require_kvm()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    vm_id = "t" + uuid.uuid4().hex[:8]
    log = tmp_path / "debug.log"
    proc = start("vcpu", LaunchSpec(vm_id, memory_mib=64, accel=accel, debug_log=str(log), device_process=False),
                 tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)})
    wait_for(lambda: log.exists() and b"No bootable device" in log.read_bytes(), 120, "SeaBIOS to finish POST")
    client = ControlClient(endpoint(vm_id, "control-vcpu"))
    yield accel, vm_id, proc, client, log
    client.close()
    try:
        proc.wait(30)          # a powered-off VM cleans up its shared memory itself
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_control_socket_and_private_memory(vcpu):
    accel, vm_id, proc, client, _ = vcpu
    status = client.call(ops.Status())
    assert status["state"] == "running" and status["accel"] == accel
    ram = f"/dev/shm/{shm_name(vm_id, 'ram')}"
    assert os.stat(ram).st_mode & 0o777 == 0o600
    assert os.stat(ram).st_size == 64 << 20
    sock = endpoint(vm_id, "control-vcpu")[len("ipc://"):]
    assert os.stat(sock).st_mode & 0o777 == 0o600

    with pytest.raises(ControlError, match=r"^the VM must be paused for snapshot \(it is running\)$"):
        client.call(ops.Snapshot())
    assert client.call(ops.Pause())["state"] == "paused"
    state = client.call(ops.Snapshot())
    assert state["state"]["engine"]["accel"] == accel
    assert "cmos" in state["state"]["platform"]
    client.call(ops.Resume())
    assert client.call(ops.Status())["state"] == "running"
    with pytest.raises(ControlError, match="does not serve disconnect"):
        client.call(ops.Disconnect())          # the RDP server's request, not the vCPU's

    client.call(ops.PowerOff())
    assert proc.wait(30) == 0
    assert not os.path.exists(ram), "the RAM region must be removed when the VM powers off"


def test_halted_guest_does_not_burn_a_core(vcpu):
    """After POST SeaBIOS waits in HLT for its 18.2 Hz timer tick: the process should be idle."""
    _, _, proc, client, _ = vcpu
    time.sleep(0.5)
    before, start = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(3)
    used = (cpu_seconds(proc.pid) - before) / (time.monotonic() - start)
    client.call(ops.PowerOff())
    assert used < 0.15, f"an idle guest used {used:.0%} of a core"
