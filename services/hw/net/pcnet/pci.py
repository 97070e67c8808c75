"""The card's PCI face: 1022:2000 (the revision tells the chips apart), class 0x0200, BAR0 = the 32
I/O ports, BAR1 = the same 32 bytes memory-mapped, INTA. The VMM hears where the guest puts each BAR."""

from __future__ import annotations

from typing import Callable

from services.hw.chipset.pci import (
    BAR_IO,
    BAR_MEM32,
    WatchedBarsFunction,
)
from services.hw.net.pcnet import registers as r

CLASS_ETHERNET = 0x020000
IO_BAR, MMIO_BAR = 0, 1
INTA = 1
STATUS, MIN_GNT, MAX_LAT = 0x06, 0x3E, 0x3F

BarCallback = Callable[[int | None], None]


class PcNetPci(WatchedBarsFunction):
    """`on_mmio_change(address)` / `on_io_change(port)` get the new place of BAR1 / BAR0, or None
    when it stops decoding; they also fire after reset() and restore()."""

    def __init__(self, chip: str, *, on_mmio_change: BarCallback, on_io_change: BarCallback):
        if chip not in r.CHIPS:
            raise ValueError(f"unknown PCnet chip '{chip}' (expected {', '.join(r.CHIPS)})")
        super().__init__(r.AMD_VENDOR_ID, r.PCNET_DEVICE_ID, CLASS_ETHERNET, revision=r.CHIPS[chip].revision,
                         subsystem_vendor_id=r.SUBSYSTEM_VENDOR_ID, subsystem_id=r.SUBSYSTEM_ID,
                         interrupt_pin=INTA)
        self._set(STATUS, 2, 0x0280)     # medium DEVSEL timing, fast back-to-back capable
        self.config[MIN_GNT], self.config[MAX_LAT] = 0x06, 0xFF      # the chip's burst needs, as on hardware
        self.add_bar(IO_BAR, r.IO_SIZE, BAR_IO)
        self.add_bar(MMIO_BAR, r.MMIO_SIZE, BAR_MEM32)
        self.watch_bars({MMIO_BAR: on_mmio_change, IO_BAR: on_io_change})
