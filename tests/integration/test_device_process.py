"""The vCPU process and the device process together: SeaBIOS finds the serial port that lives in
the other process (its probe crosses the io channel), and the port's interrupt comes back on the
irq channel."""

import os
import time
import uuid

from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.naming import endpoint
from services.ipc.spec import LaunchSpec
from tests.support.vm_processes import start


def test_seabios_probes_a_serial_port_in_the_device_process(tmp_path, monkeypatch):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    vm_id = "d" + uuid.uuid4().hex[:8]
    debug, serial = tmp_path / "debug.log", tmp_path / "serial.log"
    spec = LaunchSpec(vm_id, memory_mib=64, accel="tcg", ide_controller=None, serial_log=str(serial),
                      debug_log=str(debug))
    devices = start("devices", spec, tmp_path, env=env)
    vcpu = start("vcpu", spec, tmp_path, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (debug.exists() and b"No bootable device" in debug.read_bytes()):
            time.sleep(0.05)
        text = debug.read_text(errors="replace")
        assert "Found 1 serial ports" in text, text
        control = ControlClient(endpoint(vm_id, "control-devices"))
        status = control.call(ops.Status())
        assert status["devices"] == ["serial"]
        control.call(ops.Stop())
        control.close()
        vcpu_control = ControlClient(endpoint(vm_id, "control-vcpu"))
        vcpu_control.call(ops.PowerOff())
        vcpu_control.close()
        assert vcpu.wait(30) == 0
        assert devices.wait(30) == 0
    finally:
        for proc in (vcpu, devices):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
