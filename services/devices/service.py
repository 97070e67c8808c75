"""The device process: the VM's device bus behind the io channel, interrupts out on the irq channel.

`python -m services.devices --spec FILE`: one thread serves the io channel (accesses the vCPU
process forwards) and the control socket, in arrival order, so device state needs no locks."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import zmq

from services.devices.disks import DiskController
from services.devices.network import Network
from services.hw.bus import Bus
from services.hw.memory import GuestRam
from services.hw.serial import COM_PORTS, Uart16550
from services.images.backend import ImageError
from services.ipc import ops
from services.ipc.control import ControlError, ControlServer
from services.ipc.io import DmaLog, IoServer, IrqSender
from services.ipc.messages import ProtocolError
from services.ipc.naming import RAM, endpoint, shm_name
from services.ipc.network import NetworkError
from services.ipc.shm import SharedRegion
from services.ipc.spec import LaunchSpec, SpecError

log = logging.getLogger("headbox.devices")


class FileSink:
    """Guest output (a serial port) appended to a file, written through at once."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def __call__(self, data: bytes) -> None:
        os.write(self.fd, data)

    def close(self) -> None:
        os.close(self.fd)


class DeviceService:
    def __init__(self, vm_id: str, devices: "Devices", irq: IrqSender, dma_log: DmaLog):
        self.bus = devices.bus
        self.devices = devices
        self.irq = irq
        self.io = IoServer(endpoint(vm_id, "io"), devices.bus, zmq.Context.instance(), dma_log=dma_log,
                           pci=devices.pci_config_write, reset=devices.reset)
        self.control = ControlServer(endpoint(vm_id, "control-devices"), {
            ops.Status: lambda r: {"state": "running", "devices": sorted(self.bus.devices()), "pid": os.getpid()},
            ops.Snapshot: lambda r: {"state": self.devices.snapshot()},
            ops.Restore: lambda r: self.devices.restore(r.state),
            ops.Reset: lambda r: self.io.reset(),
            ops.SerialInput: lambda r: self.bus.device(r.device).receive(bytes(r.data)),
            ops.ReleaseMedia: self._release_media,
            ops.OpenMedia: self._open_media,
            ops.PortForward: self._port_forward,
            ops.Stop: self._stop})
        self.running = True

    def run(self) -> None:
        network = self.devices.network
        poller = zmq.Poller()
        poller.register(self.io.socket, zmq.POLLIN)
        poller.register(self.control.socket, zmq.POLLIN)
        polled: set = set()
        while self.running:
            net_items, timeout = network.poll_items()
            for item in polled - {item for item, _ in net_items}:
                poller.unregister(item)
            for item, events in net_items:
                poller.register(item, events)
            polled = {item for item, _ in net_items}
            ready = dict(poller.poll(timeout))
            if self.io.socket in ready:
                try:
                    self.io.handle_one()
                except ProtocolError as error:
                    log.error("io channel: %s", error)
            if self.control.socket in ready:
                self.control.handle_one()
            network.dispatch(ready)

    def _release_media(self, _request) -> None:
        # Teleport: flushed and unlocked for the target; the VM is paused meanwhile.
        if self.devices.disks:
            self.devices.disks.release_media()

    def _open_media(self, _request) -> None:
        try:
            if self.devices.open_media is not None:
                self.devices.open_media()
                self.devices.open_media = None
            elif self.devices.disks:
                self.devices.disks.take_media()
        except (ImageError, ValueError) as error:
            raise ControlError(str(error)) from None

    def _port_forward(self, request) -> None:
        try:
            self.devices.network.port_forward(int(request.slot), str(request.rule), bool(request.delete))
        except NetworkError as error:
            raise ControlError(str(error)) from None

    def _stop(self, _request) -> None:
        self.running = False

    def close(self) -> None:
        self.io.close()
        self.control.close()
        self.irq.close()


class Devices:
    """Everything the device process hosts for one VM, and what must be closed at the end."""

    def __init__(self):
        self.bus = Bus()
        self.sinks: list = []
        self.disks: DiskController | None = None
        self.open_media = None          # set while a teleport target waits to open its media
        self.pci_functions: dict[tuple[int, int], object] = {}
        self.network = Network("", [])       # the NAT behind each network adapter

    def pci_config_write(self, device: int, function: int, offset: int, size: int, value: int) -> None:
        target = self.pci_functions.get((device, function))
        if target is not None:
            target.config_write(offset, size, value)

    def snapshot(self) -> dict:
        """The bus's devices and the PCI functions (their BARs place devices on the bus)."""
        return {"bus": self.bus.snapshot(), "network": self.network.snapshot(),
                "pci": {f"{d}.{f}": fn.snapshot() for (d, f), fn in sorted(self.pci_functions.items())}}

    def restore(self, state: dict) -> None:
        if set(state.get("pci", {})) != {f"{d}.{f}" for d, f in self.pci_functions}:
            raise ValueError(f"the saved PCI functions ({', '.join(sorted(state.get('pci', {})))}) "
                             "differ from this VM's")
        for (d, f), function in self.pci_functions.items():
            function.restore(state["pci"][f"{d}.{f}"])
        self.bus.restore(state["bus"])
        self.network.restore(state.get("network", {}))

    def reset(self) -> None:
        """Platform reset: every device and the PCI functions they own."""
        self.bus.reset()
        for function in self.pci_functions.values():
            function.reset()

    def close(self) -> None:
        self.network.close()
        if self.disks:
            self.disks.close()
        for sink in self.sinks:
            sink.close()


def build_devices(spec: LaunchSpec, irq: IrqSender, dma_log: DmaLog) -> Devices:
    devices = Devices()
    if spec.serial_log:
        port, line = COM_PORTS[1]
        sink = FileSink(spec.serial_log)
        devices.sinks.append(sink)
        uart = Uart16550(irq=lambda level, line=line: irq.set_irq(line, level), output=sink)
        devices.bus.register(uart, "pio", port, 8, name="serial")
    devices.network = Network(spec.vm_id, spec.nics)
    if spec.ide_controller:
        if spec.incoming:
            # A teleport target opens its media only when the source has let go of them.
            devices.open_media = lambda: _attach_disks(devices, spec, irq, dma_log)
        else:
            _attach_disks(devices, spec, irq, dma_log)
    return devices


def _attach_disks(devices: Devices, spec: LaunchSpec, irq: IrqSender, dma_log: DmaLog) -> None:
    # The images first: a missing or damaged one is the error the user needs to see.
    disks = DiskController(devices.bus, None, spec.drives, model=spec.ide_controller,
                           set_irq=irq.set_irq, on_dma_write=dma_log)
    try:
        disks.ide.memory = GuestRam(SharedRegion.open(shm_name(spec.vm_id, RAM)))
    except FileNotFoundError:
        disks.close()
        raise ValueError(f"no guest RAM region for VM {spec.vm_id} (is its vCPU process running?)") from None
    devices.disks = disks
    devices.pci_functions[(1, 1)] = disks.pci


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="headbox-devices", description="Run one VM's device bus.")
    parser.add_argument("--spec", required=True, help="the VM's launch spec (services/ipc/spec.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devices %(levelname)s %(message)s")
    try:
        spec = LaunchSpec.load_for_run(args.spec)
    except SpecError as error:
        print(f"headbox-devices: error: {error}", file=sys.stderr)
        return 2
    dma_log = DmaLog()
    irq = IrqSender(endpoint(spec.vm_id, "irq"), dma_log=dma_log)
    try:
        devices = build_devices(spec, irq, dma_log)
    except (ImageError, ValueError, FileNotFoundError) as error:
        print(f"headbox-devices: error: {error}", file=sys.stderr)
        irq.close()
        return 2
    service = DeviceService(spec.vm_id, devices, irq, dma_log)
    try:
        service.run()
    finally:
        if devices.disks:
            devices.disks.flush()
        service.close()
        devices.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
