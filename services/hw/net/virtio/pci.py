"""The card's PCI face: 1AF4:1000 (a transitional virtio network device, subsystem 1AF4:0001),
class 0x0200, BAR0 = the legacy registers as I/O ports, BAR1 = the same registers as memory, INTA."""

from __future__ import annotations

from typing import Callable

from services.hw.chipset.pci import (
    BAR_IO,
    BAR_MEM32,
    WatchedBarsFunction,
)
from services.hw.net.virtio.net import CHIPS

VENDOR_REDHAT_QUMRANET = 0x1AF4
DEVICE_TRANSITIONAL_NET = 0x1000    # legacy drivers take 0x1000-0x103F with revision 0
SUBSYSTEM_NET = 0x0001              # for a transitional device, the virtio device type
CLASS_ETHERNET = 0x020000
IO_BAR, MMIO_BAR = 0, 1
IO_SIZE = 32                        # the 20-byte register block and the 8-byte net config
MMIO_SIZE = 4096                    # a page of its own; Linux's legacy driver never maps it
INTA = 1

BarCallback = Callable[[int | None], None]


class VirtioNetPci(WatchedBarsFunction):
    """`on_mmio_change(address)` / `on_io_change(port)` get the new place of BAR1 / BAR0, or None
    when it stops decoding; they also fire after reset() and restore()."""

    def __init__(self, chip: str, *, on_mmio_change: BarCallback, on_io_change: BarCallback):
        if chip not in CHIPS:
            raise ValueError(f"unknown virtio network chip '{chip}' (expected {', '.join(CHIPS)})")
        # No capability list: Linux's modern virtio_pci then leaves the device to the legacy one.
        super().__init__(VENDOR_REDHAT_QUMRANET, DEVICE_TRANSITIONAL_NET, CLASS_ETHERNET, revision=0,
                         subsystem_vendor_id=VENDOR_REDHAT_QUMRANET, subsystem_id=SUBSYSTEM_NET,
                         interrupt_pin=INTA)
        self.add_bar(IO_BAR, IO_SIZE, BAR_IO)
        self.add_bar(MMIO_BAR, MMIO_SIZE, BAR_MEM32)
        self.watch_bars({IO_BAR: on_io_change, MMIO_BAR: on_mmio_change})
