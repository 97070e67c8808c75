"""The Bochs VBE "DISPI" interface of the standard VGA: an index/data register pair (ports 0x1CE/0x1CF,
or BAR2 0x500-0x515) that sets linear-framebuffer modes of any size and depth without VGA timings."""

from __future__ import annotations

from typing import Callable

INDEX_PORT, DATA_PORT = 0x1CE, 0x1CF

ID, XRES, YRES, BPP, ENABLE, BANK, VIRT_WIDTH, VIRT_HEIGHT, X_OFFSET, Y_OFFSET = range(10)
VIDEO_MEMORY_64K = 0x0A
REGISTER_COUNT = 10

ID0, ID5 = 0xB0C0, 0xB0C5
ENABLED, GETCAPS, DAC_8BIT, LFB_ENABLED, NOCLEARMEM = 0x01, 0x02, 0x20, 0x40, 0x80

# The surface other processes read is sized for 2560x1600x32, the largest mode in SeaVGABIOS's table;
# GETCAPS reports these so the BIOS drops larger modes from its list.
MAX_XRES, MAX_YRES, MAX_BPP = 2560, 1600, 32
DEPTHS = (4, 8, 15, 16, 24, 32)


def bytes_per_line(width: int, bpp: int) -> int:
    bits = 16 if bpp == 15 else bpp
    return width * bits // 8


class Dispi:
    """The register file. `on_enable(enabled, clear_bytes)` lets the VGA core put its legacy registers
    into the state a VBE mode implies; `on_change()` says the displayed geometry may have changed."""

    name = "vga-dispi"

    def __init__(self, vram_size: int, *, on_enable: Callable[[bool], None] | None = None,
                 on_change: Callable[[], None] | None = None):
        if vram_size < 1 << 16 or vram_size % (1 << 16):
            raise ValueError(f"VRAM must be a whole number of 64 KiB blocks, not {vram_size} bytes")
        self.vram_size = vram_size
        self.on_enable = on_enable
        self.on_change = on_change
        self.reset()

    def reset(self) -> None:
        self.regs = [0] * REGISTER_COUNT
        self.regs[ID] = ID5
        self.index = 0
        self.line_offset = 0      # bytes from one scanline to the next in VRAM
        self.start_offset = 0     # byte offset of the visible top-left pixel

    # -- derived state the renderer and the legacy window use ----------------------------------
    @property
    def enabled(self) -> bool:
        return bool(self.regs[ENABLE] & ENABLED)

    @property
    def eight_bit_dac(self) -> bool:
        return bool(self.regs[ENABLE] & DAC_8BIT)

    @property
    def bank_offset(self) -> int:
        return self.regs[BANK] << 16

    # -- the ports -------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return self.index
        return self.read_register(self.index)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.index = value & 0xFFFF
        else:
            self.write_register(self.index, value & 0xFFFF)

    def read_register(self, index: int) -> int:
        if index == VIDEO_MEMORY_64K:
            return self.vram_size >> 16
        if index >= REGISTER_COUNT:
            return 0
        if self.regs[ENABLE] & GETCAPS:
            caps = {XRES: MAX_XRES, YRES: MAX_YRES, BPP: MAX_BPP}.get(index)
            if caps is not None:
                return caps
        return self.regs[index]

    def write_register(self, index: int, value: int) -> None:
        regs = self.regs
        if index == ID:
            if ID0 <= value <= ID5:
                regs[ID] = value
        elif index in (XRES, YRES, BPP, VIRT_WIDTH, X_OFFSET, Y_OFFSET):
            regs[index] = value
            if self.enabled:
                self._validate()
                self._changed()
        elif index == BANK:
            # 4 bpp banks address planar memory, four bytes of VRAM per window byte.
            banks = self.vram_size >> 16
            regs[BANK] = value % (banks // 4 if regs[BPP] == 4 else banks)
        elif index == ENABLE:
            self._write_enable(value)

    def _write_enable(self, value: int) -> None:
        regs = self.regs
        was_enabled = self.enabled
        regs[ENABLE] = value
        if value & ENABLED and not was_enabled:
            # A mode set starts from an unpanned screen whose virtual width is the visible width.
            regs[VIRT_WIDTH] = regs[X_OFFSET] = regs[Y_OFFSET] = 0
            self._validate()
            if self.on_enable is not None:
                self.on_enable(True)
            self._changed()
        elif was_enabled and not value & ENABLED:
            regs[BANK] = 0
            if self.on_enable is not None:
                self.on_enable(False)
            self._changed()

    def clear_bytes(self) -> int:
        """How much VRAM a mode set without NOCLEARMEM zeroes: the visible rows at the virtual width."""
        return min(self.vram_size, self.regs[YRES] * self.line_offset)

    def _validate(self) -> None:
        # Guests cannot be told about errors through this interface, so nonsense is pulled to the
        # nearest value that fits in VRAM instead (the rule QEMU follows too).
        regs = self.regs
        if regs[BPP] not in DEPTHS:
            regs[BPP] = 8
        bpp = regs[BPP]
        regs[XRES] = min(max(regs[XRES] & ~7, 8), MAX_XRES)
        regs[VIRT_WIDTH] = min(max(regs[VIRT_WIDTH] & ~7, regs[XRES]), MAX_XRES)
        line = bytes_per_line(regs[VIRT_WIDTH], bpp)
        max_rows = self.vram_size // line
        regs[YRES] = min(max(regs[YRES], 1), MAX_YRES, max_rows)
        regs[X_OFFSET] = min(regs[X_OFFSET], regs[VIRT_WIDTH] - regs[XRES])
        regs[Y_OFFSET] = min(regs[Y_OFFSET], max_rows - regs[YRES])
        regs[VIRT_HEIGHT] = min(max_rows, 0xFFFF)
        self.line_offset = line
        self.start_offset = bytes_per_line(regs[X_OFFSET], bpp) + regs[Y_OFFSET] * line

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def snapshot(self) -> dict:
        return {"regs": list(self.regs), "index": self.index}

    def restore(self, state: dict) -> None:
        regs = [int(v) & 0xFFFF for v in state["regs"]]
        if len(regs) != REGISTER_COUNT:
            raise ValueError(f"DISPI state has {len(regs)} registers, expected {REGISTER_COUNT}")
        self.regs = regs
        self.index = int(state["index"]) & 0xFFFF
        if self.enabled:
            self._validate()
        else:
            self.line_offset = self.start_offset = 0
