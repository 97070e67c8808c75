"""The vCPU process: runs one VM's processors and answers its control socket.

`python -m services.vcpu --vm-id ID ...`: the main thread runs the guest; a control thread serves
status, pause, resume, reset, power off, snapshot and restore requests (messages.Control)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

import zmq

from services.ipc.control import ControlClient  # noqa: F401 - its clients import it from here too
from services.ipc.io import InputReceiver, IrqReceiver, RemoteBus
from services.ipc.messages import CONTROL_VERSION, Control, pack, unpack
from services.ipc.naming import endpoint, restrict_socket
from services.vcpu.cpuid import parse_override as parse_cpuid_override
from services.vcpu.display import DisplayPublisher
from services.vcpu.engine import EngineError, StopReason
from services.vcpu.machine import DEFAULT_FIRMWARE, Machine, MachineConfig

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
        self.closing = False
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(control_endpoint)
        restrict_socket(control_endpoint)
        self.thread = threading.Thread(target=self._serve, name="vcpu-control", daemon=True)

    def run(self) -> StopReason:
        self.thread.start()
        if self.incoming:
            self.paused.set()
            self.resume.wait()
            self.resume.clear()
            self.paused.clear()
            if self.poweroff:
                self.state = "stopped"
                return StopReason.POWEROFF
            self.state = "running"
        while True:
            reason = self.machine.run()
            if reason == StopReason.PAUSED and not self.poweroff:
                self.state = "paused"
                self.paused.set()
                self.resume.wait()
                self.resume.clear()
                self.paused.clear()
                if self.poweroff:
                    reason = StopReason.POWEROFF
                    break
                self.state = "running"
                continue
            break
        self.state = "stopped"
        return reason

    # -- control socket ------------------------------------------------------------------------
    def _serve(self) -> None:
        # The socket belongs to this thread alone (ZeroMQ sockets are not thread-safe): it is
        # closed here too, after the last reply went out.
        while not self.closing:
            if not self.socket.poll(100):
                continue
            try:
                reply = self._handle(unpack(self.socket.recv()))
            except Exception as error:   # a bad request must not take the VM down
                log.exception("control request failed")
                reply = {"ok": False, "error": str(error) or type(error).__name__}
            self.socket.send(pack(reply))
        self.socket.close()

    def _handle(self, request) -> dict:
        if not isinstance(request, dict) or request.get("v") != CONTROL_VERSION:
            return {"ok": False, "error": f"expected a control request of version {CONTROL_VERSION}"}
        op, machine = request.get("op"), self.machine
        if op == Control.STATUS:
            return {"ok": True, "state": self.state, "accel": machine.accel,
                    "accel_reason": machine.accel_reason, "cpus": machine.config.cpus,
                    "ram_mib": machine.config.ram_mib, "pid": os.getpid(),
                    "cpu_features": machine.engine.cpu_features()}
        if op == Control.PAUSE:
            if self.state == "running":
                machine.engine.request_stop(StopReason.PAUSED)
                if not self.paused.wait(10):
                    return {"ok": False, "error": "the vCPUs did not stop within 10 s"}
            return {"ok": True, "state": self.state}
        if op == Control.RESUME:
            if self.state == "paused":
                self.resume.set()
            return {"ok": True}
        if op == Control.RESET:
            if self.state == "paused":
                machine.reset()
            else:
                machine.engine.request_stop(StopReason.RESET)
            return {"ok": True}
        if op == Control.POWEROFF:
            self.poweroff = True
            machine.engine.request_stop(StopReason.POWEROFF)
            self.resume.set()
            return {"ok": True}
        if op in (Control.SNAPSHOT, Control.RESTORE):
            if self.state != "paused":
                return {"ok": False, "error": f"the VM must be paused for {op} (it is {self.state})"}
            if op == Control.SNAPSHOT:
                if machine.device_bus is not None:
                    machine.device_bus.sync()
                return {"ok": True, "state": machine.snapshot()}
            machine.restore(request["state"])
            return {"ok": True}
        if op == Control.DIRTY:
            if "areas" not in request:
                return {"ok": True, "bitmap": machine.engine.dirty_pages()}
            if request.get("stop"):
                machine.stop_tracking()
                return {"ok": True}
            reply = {"ok": True}
            if request.get("pause"):
                # A teleport's stop-and-copy in one round trip: pause, last pages, state.
                paused = self._handle({"v": CONTROL_VERSION, "op": Control.PAUSE})
                if not paused["ok"]:
                    return paused
            # Page indices as little-endian uint32s; None = every page (tracking just started).
            written = {area: machine.written_pages(area) for area in request["areas"]}
            reply["pages"] = {area: None if pages is None else pages.astype("<u4").tobytes()
                              for area, pages in written.items()}
            if request.get("pause"):
                if machine.device_bus is not None:
                    machine.device_bus.sync()
                reply["state"] = machine.snapshot()
            return reply
        if op == Control.SCREENSHOT:
            machine.screenshot_png(request["path"])
            return {"ok": True}
        if op == Control.SCREEN_TEXT:
            return {"ok": True, "rows": machine.screen_text()}
        if op == Control.POWER_BUTTON:
            return {"ok": True, "handled": machine.power_button()}
        if op == Control.THROTTLE:
            machine.engine.set_throttle(float(request.get("share", 0)))
            return {"ok": True}
        if op == Control.KEYS:
            machine.keyboard([(int(c), bool(e), bool(p)) for c, e, p in request["scancodes"]])
            return {"ok": True}
        return {"ok": False, "error": f"unknown control operation {op!r}"}

    def close(self) -> None:
        self.closing = True
        if self.thread.is_alive():
            self.thread.join(5)
        else:
            self.socket.close()


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="headbox-vcpu", description="Run one VM's processors.")
    parser.add_argument("--vm-id", required=True)
    parser.add_argument("--memory", type=int, default=128, metavar="MiB")
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    parser.add_argument("--firmware", default=DEFAULT_FIRMWARE)
    parser.add_argument("--boot", default="dvd,disk", help="boot order: floppy, dvd, disk, net")
    parser.add_argument("--debug-log", help="file for the firmware's debug-port output")
    parser.add_argument("--acpi", default="on", choices=("on", "off"))
    parser.add_argument("--ide-controller", default="piix3", choices=("piix3", "piix4", "none"))
    parser.add_argument("--devices", action="store_true",
                        help="send unclaimed port/MMIO accesses to the device process (io channel)")
    parser.add_argument("--cpuid", action="append", default=[], metavar="LEAF:EAX:EBX:ECX:EDX",
                        help="what CPUID answers the guest for a leaf, in hex (VBoxManage modifyvm --cpuid)")
    parser.add_argument("--incoming", action="store_true",
                        help="wait paused for a teleported VM's state instead of booting")
    parser.add_argument("--exit-port", type=lambda s: int(s, 0), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s vcpu %(levelname)s %(message)s")
    sink = LineSink(args.debug_log) if args.debug_log else None
    config = MachineConfig(vm_id=args.vm_id, ram_mib=args.memory, cpus=args.cpus, accel=args.accel,
                           firmware=args.firmware, boot_order=tuple(filter(None, args.boot.split(","))),
                           exit_port=args.exit_port, acpi=args.acpi == "on",
                           ide_controller=None if args.ide_controller == "none" else args.ide_controller)
    try:
        overrides = dict(parse_cpuid_override(text) for text in args.cpuid)
    except ValueError as error:
        print(f"headbox-vcpu: error: {error}", file=sys.stderr)
        return 2
    if overrides:
        config.engine_options["cpuid_values"] = overrides
    device_bus = RemoteBus(endpoint(args.vm_id, "io")) if args.devices else None
    try:
        machine = Machine(config, debug_sink=sink, device_bus=device_bus)
    except (EngineError, ValueError, FileExistsError) as error:
        message = str(error)
        if isinstance(error, FileExistsError):
            message = f"VM {args.vm_id} is already running (its RAM region exists)"
        print(f"headbox-vcpu: error: {message}", file=sys.stderr)
        return 2
    service = VcpuService(machine, endpoint(args.vm_id, "control-vcpu"), incoming=args.incoming)
    irq = IrqReceiver(endpoint(args.vm_id, "irq"), machine.engine.set_irq,
                      on_dma=machine.note_dma) if args.devices else None
    keyboard = machine.bus.device("i8042")
    display = DisplayPublisher(machine.surface, endpoint(args.vm_id, "display"),
                               machine.display_lock) if machine.surface is not None else None
    inputs = InputReceiver(endpoint(args.vm_id, "input"),
                           key=lambda code, ext, pressed: keyboard.keyboard.key(code, ext, pressed),
                           mouse=machine.mouse, sync_locks=keyboard.keyboard.sync_locks)
    try:
        reason = service.run()
    finally:
        service.close()
        inputs.close()
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
