"""The PIIX IDE controller: two channels on their legacy ports, the bus-master ports, the guest
memory DMA goes to and the interrupt lines, and the drives at the four positions."""

from __future__ import annotations

from typing import Callable

from services.hw.storage.ide.busmaster import BusMasterPorts
from services.hw.storage.ide.channel import IdeChannel

CHANNELS = ((0x1F0, 0x3F6, 14), (0x170, 0x376, 15))    # command block, control port, ISA IRQ


class IdeController:
    """Both channels of the PIIX IDE function. Sans-I/O: every command completes at once.

        ide = IdeController(irq=lambda channel, level: ..., memory=guest_memory,
                            on_dma_write=lambda gpa, length: ...)
        ide.attach(0, 0, HardDisk(disk_backend)); ide.attach(1, 0, CdromDrive(iso_backend))
        ide.register(bus)        # 0x1F0-0x1F7, 0x3F6, 0x170-0x177, 0x376: ide0, ide0-ctl, ide1, ide1-ctl
        pci_root.add(PiixIdeFunction("piix3", on_bar_change=move_bus_master), IDE_SLOT, IDE_FUNCTION)

    `irq(channel, level)` follows the channel's INTRQ gated by nIEN (ISA IRQ 14 for channel 0, 15
    for 1). `memory` (read(gpa, size) -> bytes, write(gpa, data)) is the DMA target and
    `on_dma_write(gpa, length)` follows every DMA write into it. `on_bar_change(4, old, new)` of
    the PCI function says where `ide.bus_master` (16 ports, stateless) must be mapped now; None
    means nowhere (BAR4 unprogrammed or I/O decoding off). The channels ide0/ide1 carry all state."""

    def __init__(self, irq: Callable[[int, bool], None] = lambda channel, level: None, *,
                 memory=None, on_dma_write: Callable[[int, int], None] | None = None):
        self.irq = irq
        self.memory = memory
        self.on_dma_write = on_dma_write
        self.channels = [IdeChannel(0, self), IdeChannel(1, self)]
        self.bus_master = BusMasterPorts(self.channels)

    def attach(self, channel: int, unit: int, drive) -> None:
        """Put a HardDisk, a CdromDrive or None (no device) at channel 0/1, unit 0 (master)/1."""
        self.channels[channel].attach(unit, drive)

    def drive(self, channel: int, unit: int):
        return self.channels[channel].units[unit].drive

    def register(self, bus) -> None:
        """Map the legacy ports of both channels onto `bus`."""
        for channel, (command_base, control_port, _) in zip(self.channels, CHANNELS):
            bus.register(channel, "pio", command_base, 8, name=channel.name)
            bus.register(channel.control, "pio", control_port, 1, name=channel.control.name)

    def reset(self) -> None:
        for channel in self.channels:
            channel.reset()

    def snapshot(self) -> dict:
        return {"channels": [channel.snapshot() for channel in self.channels]}

    def restore(self, state: dict) -> None:
        for channel, channel_state in zip(self.channels, state["channels"]):
            channel.restore(channel_state)
