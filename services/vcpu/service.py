"""The vCPU process: runs one VM's processors and answers its control socket.

`python -m services.vcpu --spec FILE`: the main thread runs the guest; a control thread serves
the requests of services/ipc/ops.py listed in VcpuService.handlers."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

from services.ipc import ops
from services.ipc.control import ControlError, ControlServer
from services.ipc.frames import Doorbell
from services.ipc.io import InputReceiver, IrqReceiver, RemoteBus
from services.ipc.naming import endpoint
from services.ipc.spec import LaunchSpec, SpecError
from services.vcpu.display import DisplayPublisher
from services.vcpu.engine import EngineError, StopReason
from services.vcpu.machine import Machine
from services.vcpu.network import DoorbellThread

log = logging.getLogger("headbox.vcpu")


class LineSink:
    """Debug-port bytes to a file, flushed per line (SeaBIOS writes one byte per OUT)."""

    def __init__(self, path: str):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.file = os.fdopen(fd, "ab", buffering=0)
        self.pending = bytearray()

    def __call__(self, data: bytes) -> None:
        self.pending += data
        if b"\n" in data or len(self.pending) > 4096:
            self.file.write(self.pending)
            self.pending.clear()

    def close(self) -> None:
        if self.pending:
            self.file.write(self.pending)
        self.file.close()


class VcpuService:
    def __init__(self, machine: Machine, control_endpoint: str, incoming: bool = False):
        self.machine = machine
        # An incoming (teleport target) VM waits paused for the state it is sent, before its
        # first instruction.
        self.state = "paused" if incoming else "running"
        self.incoming = incoming
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.poweroff = False
        self.control = ControlServer(control_endpoint, self.handlers())

    def run(self) -> StopReason:
        self.control.serve_in_thread("vcpu-control")
        if self.incoming and not self._sit_paused():
            return StopReason.POWEROFF
        while True:
            reason = self.machine.run()
            if reason == StopReason.PAUSED and not self.poweroff:
                if self._sit_paused():
                    continue
                reason = StopReason.POWEROFF
            break
        self.state = "stopped"
        return reason

    def _sit_paused(self) -> bool:
        """Wait for a resume (True) or a power-off (False)."""
        self.state = "paused"
        self.paused.set()
        self.resume.wait()
        self.resume.clear()
        self.state = "stopped" if self.poweroff else "running"
        self.paused.clear()          # after the new state: a resume request returns on it
        return not self.poweroff

    # -- control socket ------------------------------------------------------------------------
    def handlers(self) -> dict:
        return {ops.Status: self._status, ops.Pause: self._pause, ops.Resume: self._resume,
                ops.Reset: self._reset, ops.PowerOff: self._poweroff, ops.Snapshot: self._snapshot,
                ops.Restore: self._restore, ops.DirtyPages: self._dirty,
                ops.Screenshot: lambda r: self.machine.screenshot_png(r.path),
                ops.ScreenText: lambda r: {"rows": self.machine.screen_text()},
                ops.PowerButton: lambda r: {"handled": self.machine.power_button()},
                ops.Throttle: lambda r: self.machine.engine.set_throttle(float(r.share)),
                ops.LinkState: self._link_state,
                ops.Keys: lambda r: self.machine.keyboard([(int(c), bool(e), bool(p)) for c, e, p in r.scancodes])}

    def _link_state(self, request) -> None:
        try:
            self.machine.network.set_link(int(request.slot), bool(request.up))
        except ValueError as error:
            raise ControlError(str(error)) from None

    def _status(self, _request) -> dict:
        machine = self.machine
        return {"state": self.state, "accel": machine.accel, "accel_reason": machine.accel_reason,
                "cpus": machine.spec.cpus, "memory_mib": machine.spec.memory_mib, "pid": os.getpid(),
                "cpu_features": machine.engine.cpu_features()}

    def _pause(self, _request=None) -> dict:
        if self.state == "running":
            self.machine.engine.request_stop(StopReason.PAUSED)
            if not self.paused.wait(10):
                raise ControlError("the vCPUs did not stop within 10 s")
        return {"state": self.state}

    def _resume(self, _request) -> None:
        if self.state == "paused":
            self.resume.set()
            deadline = time.monotonic() + 10
            while self.paused.is_set() and time.monotonic() < deadline:
                time.sleep(0.001)

    def _reset(self, _request) -> None:
        if self.state == "paused":
            self.machine.reset()
        else:
            self.machine.engine.request_stop(StopReason.RESET)

    def _poweroff(self, _request) -> None:
        self.poweroff = True
        self.machine.engine.request_stop(StopReason.POWEROFF)
        self.resume.set()

    def _require_paused(self, request) -> None:
        if self.state != "paused":
            raise ControlError(f"the VM must be paused for {request.op} (it is {self.state})")

    def _snapshot(self, request) -> dict:
        self._require_paused(request)
        if self.machine.device_bus is not None:
            self.machine.device_bus.sync()
        return {"state": self.machine.snapshot()}

    def _restore(self, request) -> None:
        self._require_paused(request)
        self.machine.restore(request.state)

    def _dirty(self, request) -> dict:
        machine = self.machine
        if request.areas is None:
            return {"bitmap": machine.engine.dirty_pages()}
        if request.stop:
            machine.stop_tracking()
            return {}
        if request.pause:
            self._pause()
        # Page indices as little-endian uint32s; None = every page (tracking just started).
        written = {area: machine.written_pages(area) for area in request.areas}
        reply = {"pages": {area: None if pages is None else pages.astype("<u4").tobytes()
                           for area, pages in written.items()}}
        if request.pause:
            if machine.device_bus is not None:
                machine.device_bus.sync()
            reply["state"] = machine.snapshot()
        return reply

    def close(self) -> None:
        self.control.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="headbox-vcpu", description="Run one VM's processors.")
    parser.add_argument("--spec", required=True, help="the VM's launch spec (services/ipc/spec.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s vcpu %(levelname)s %(message)s")
    try:
        spec = LaunchSpec.load_for_run(args.spec)
    except SpecError as error:
        print(f"headbox-vcpu: error: {error}", file=sys.stderr)
        return 2
    sink = LineSink(spec.debug_log) if spec.debug_log else None
    device_bus = RemoteBus(endpoint(spec.vm_id, "io")) if spec.device_process else None
    try:
        machine = Machine(spec, debug_sink=sink, device_bus=device_bus)
    except (EngineError, ValueError, FileExistsError) as error:
        message = str(error)
        if isinstance(error, FileExistsError):
            message = f"VM {spec.vm_id} is already running (its RAM region exists)"
        print(f"headbox-vcpu: error: {message}", file=sys.stderr)
        return 2
    service = VcpuService(machine, endpoint(spec.vm_id, "control-vcpu"), incoming=spec.incoming)
    irq = IrqReceiver(endpoint(spec.vm_id, "irq"), machine.engine.set_irq,
                      on_dma=machine.note_dma) if spec.device_process else None
    keyboard = machine.bus.device("i8042")
    display = DisplayPublisher(machine.surface, endpoint(spec.vm_id, "display"),
                               machine.display_lock) if machine.surface is not None else None
    inputs = InputReceiver(endpoint(spec.vm_id, "input"),
                           key=lambda code, ext, pressed: keyboard.keyboard.key(code, ext, pressed),
                           mouse=machine.mouse, sync_locks=keyboard.keyboard.sync_locks)
    net_out = net_in = None
    if spec.device_process and any(card.region is not None for card in machine.network.cards.values()):
        net_out = Doorbell(endpoint(spec.vm_id, "net-out"))
        machine.network.connect(net_out)
        net_in = DoorbellThread(endpoint(spec.vm_id, "net-in"), machine.network)
    try:
        reason = service.run()
    finally:
        service.close()
        inputs.close()
        if net_in:
            net_in.close()
            net_out.close()
        if display:
            display.close()
        if irq:
            irq.close()
        if device_bus:
            device_bus.close()
        machine.close()
        if sink:
            sink.close()
    log.info("vCPUs stopped: %s", reason.value)
    return 0 if reason == StopReason.POWEROFF else 1


if __name__ == "__main__":
    sys.exit(main())
