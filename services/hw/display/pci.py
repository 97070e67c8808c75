"""The std VGA's PCI face: configuration header 1234:1111 (class 0x0300) with BAR0 = the VRAM as a
prefetchable framebuffer and BAR2 = a 4 KiB register page, and the device behind that page."""

from __future__ import annotations

from typing import Callable

from services.hw.chipset.pci import BAR_MEM32, COMMAND_MEMORY, PciFunction
from services.hw.display import dispi as dispi_regs
from services.hw.display.edid import build_edid

VENDOR_ID, DEVICE_ID = 0x1234, 0x1111
CLASS_VGA = 0x030000
REVISION = 0x02
LFB_BAR, MMIO_BAR = 0, 2
MMIO_SIZE = 0x1000
RECOMMENDED_SLOT = 2     # where QEMU's pc machine puts it (00:02.0)

# BAR2 layout (QEMU docs/specs/standard-vga.rst).
EDID_OFFSET, EDID_SIZE = 0x000, 0x400
VGA_PORTS_OFFSET, VGA_PORTS_SIZE = 0x400, 0x20          # ports 0x3C0-0x3DF
DISPI_OFFSET, DISPI_SIZE = 0x500, 2 * dispi_regs.VIDEO_MEMORY_64K + 2

BarCallback = Callable[[int | None], None]


class StdVgaPci(PciFunction):
    """The configuration header. The VMM learns where the guest put the card through two callbacks,
    each given the new guest-physical address, or None when the BAR stops decoding:

      on_lfb_change(address)   BAR0 moved: map VRAM (vga.vram, the whole of it) at `address`
      on_mmio_change(address)  BAR2 moved: route `address`..+4 KiB to `mmio` (a StdVgaMmio)

    A BAR decodes while the command register's memory bit is set and the BAR holds an address; BAR
    sizing (all-ones writes) normally happens with decoding off, so the callbacks see only real
    placements. They also fire after reset() and restore(), so a restored VM gets its LFB mapped.
    `edid` (128 bytes) describes the monitor in BAR2; the default prefers 1024x768."""

    def __init__(self, vga, *, on_lfb_change: BarCallback | None = None,
                 on_mmio_change: BarCallback | None = None, mmio_bar: bool = True,
                 edid: bytes | None = None):
        super().__init__(VENDOR_ID, DEVICE_ID, CLASS_VGA, revision=REVISION,
                         subsystem_vendor_id=0x1AF4, subsystem_id=0x1100)
        self.vga = vga
        self.add_bar(LFB_BAR, vga.vram_size, BAR_MEM32, prefetchable=True)
        self.mmio = StdVgaMmio(vga, build_edid() if edid is None else edid) if mmio_bar else None
        if mmio_bar:
            self.add_bar(MMIO_BAR, MMIO_SIZE, BAR_MEM32)
        self.on_lfb_change = on_lfb_change
        self.on_mmio_change = on_mmio_change
        self._decoded = self._placements()

    def decoded_address(self, index: int) -> int | None:
        """Where BAR `index` currently decodes, or None."""
        if index not in self.bars or not self.command & COMMAND_MEMORY:
            return None
        return self.bar_address(index) or None

    @property
    def lfb_address(self) -> int | None:
        return self.decoded_address(LFB_BAR)

    def _placements(self) -> dict[int, int | None]:
        return {index: self.decoded_address(index) for index in (LFB_BAR, MMIO_BAR) if index in self.bars}

    def _notify(self, force: bool = False) -> None:
        now = self._placements()
        for index, callback in ((LFB_BAR, self.on_lfb_change), (MMIO_BAR, self.on_mmio_change)):
            if index in now and callback is not None and (force or now[index] != self._decoded.get(index)):
                callback(now[index])
        self._decoded = now

    def config_write(self, offset: int, size: int, value: int) -> None:
        super().config_write(offset, size, value)
        self._notify()

    def reset(self) -> None:
        super().reset()
        self._notify()

    def restore(self, state: dict) -> None:
        super().restore(state)
        self._notify(force=True)


class StdVgaMmio:
    """BAR2: EDID bytes, the VGA ports 0x3C0-0x3DF, and the DISPI registers at 0x500 + 2 * index.
    Its state lives in the VGA, so its snapshot is empty."""

    name = "vga-mmio"

    def __init__(self, vga, edid: bytes = b""):
        self.vga = vga
        self.edid = bytes(edid[:EDID_SIZE])

    def read(self, offset: int, size: int) -> int:
        if offset < EDID_OFFSET + EDID_SIZE:
            chunk = self.edid[offset:offset + size]
            return int.from_bytes(chunk.ljust(size, b"\0"), "little")
        if VGA_PORTS_OFFSET <= offset < VGA_PORTS_OFFSET + VGA_PORTS_SIZE:
            return self.vga.read(0x3C0 - 0x3B0 + offset - VGA_PORTS_OFFSET, size)
        if DISPI_OFFSET <= offset < DISPI_OFFSET + DISPI_SIZE:
            return self.vga.dispi.read_register((offset - DISPI_OFFSET) >> 1)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if VGA_PORTS_OFFSET <= offset < VGA_PORTS_OFFSET + VGA_PORTS_SIZE:
            self.vga.write(0x3C0 - 0x3B0 + offset - VGA_PORTS_OFFSET, size, value)
        elif DISPI_OFFSET <= offset < DISPI_OFFSET + DISPI_SIZE:
            self.vga.dispi.write_register((offset - DISPI_OFFSET) >> 1, value & 0xFFFF)

    def snapshot(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass
