"""The card's PCI face: 8086:100E/1004/100F, class 0x0200, BAR0 = the 128 KiB register file,
BAR2 = the IOADDR/IODATA window, INTA. The VMM hears where the guest puts each BAR."""

from __future__ import annotations

from typing import Callable

from services.hw.chipset.pci import (
    BAR_IO,
    BAR_MEM32,
    WatchedBarsFunction,
)
from services.hw.net.e1000 import registers as r
from services.hw.net.e1000.device import CHIPS

CLASS_ETHERNET = 0x020000
MMIO_BAR, IO_BAR = 0, 2
INTA = 1

BarCallback = Callable[[int | None], None]


class E1000Pci(WatchedBarsFunction):
    """`on_mmio_change(address)` / `on_io_change(port)` get the new place of BAR0 / BAR2, or None
    when it stops decoding; they also fire after reset() and restore()."""

    def __init__(self, chip: str, *, on_mmio_change: BarCallback, on_io_change: BarCallback):
        device_id, subsystem_vendor, subsystem_id = CHIPS[chip]
        super().__init__(0x8086, device_id, CLASS_ETHERNET, revision=0x02 if chip != "82543GC" else 0x00,
                         subsystem_vendor_id=subsystem_vendor, subsystem_id=subsystem_id,
                         interrupt_pin=INTA)
        self._set(0x06, 2, 0x0230)       # status: capabilities off, 66 MHz, fast back-to-back
        self.add_bar(MMIO_BAR, r.MMIO_SIZE, BAR_MEM32)
        self.add_bar(IO_BAR, r.IO_SIZE, BAR_IO)
        self.watch_bars({MMIO_BAR: on_mmio_change, IO_BAR: on_io_change})
