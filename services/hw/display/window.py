"""The legacy VGA memory window 0xA0000-0xBFFFF: CPU accesses translated into VRAM accesses by the
sequencer and graphics controller (chain-4, odd/even, planar with latches and the four write modes)."""

from __future__ import annotations

BASE, SIZE = 0xA0000, 0x20000

# Graphics controller and sequencer register numbers used here.
GR_SET_RESET, GR_ENABLE_SET_RESET, GR_COLOR_COMPARE, GR_DATA_ROTATE = 0, 1, 2, 3
GR_READ_MAP, GR_MODE, GR_MISC, GR_COLOR_DONT_CARE, GR_BIT_MASK = 4, 5, 6, 7, 8
SR_MAP_MASK, SR_MEMORY_MODE = 2, 4
SR4_CHAIN4 = 0x08
GR5_ODD_EVEN, GR5_READ_MODE = 0x10, 0x08

# Memory map select (GR6 bits 2-3): window start and length within 0xA0000-0xBFFFF.
_MAPS = ((0x00000, 0x20000), (0x00000, 0x10000), (0x10000, 0x8000), (0x18000, 0x8000))


def _spread(nibble: int) -> int:
    """A 4-bit plane set as a 32-bit mask with 0xFF in the byte of every selected plane."""
    return sum(0xFF << (8 * p) for p in range(4) if nibble >> p & 1)


_SPREAD = [_spread(n) for n in range(16)]


# VRAM keeps the four planes interleaved: byte 4*a + p is plane p at planar address a (QEMU's layout),
# so chain-4 and the Bochs banked window are plain byte accesses and a planar access is one 32-bit word.


class LegacyWindow:
    """An MMIO device for the 128 KiB window. The state it owns is the 32-bit latch; the registers that
    steer it belong to the VGA core (`vga.sr`, `vga.gr`, `vga.dispi`)."""

    name = "vga-window"

    def __init__(self, vga):
        self.vga = vga
        self.latch = 0
        self.bytes = vga.vram_bytes      # memoryview, format 'B'
        self.words = vga.vram_words      # memoryview, format 'I'
        self.size = len(self.bytes)

    def _address(self, offset: int) -> int:
        start, length = _MAPS[(self.vga.gr[GR_MISC] >> 2) & 3]
        offset -= start
        if not 0 <= offset < length:
            return -1
        if length == 0x10000:
            offset += self.vga.dispi.bank_offset
        return offset

    # -- byte accesses ---------------------------------------------------------------------------
    def read_byte(self, offset: int) -> int:
        addr = self._address(offset)
        if addr < 0:
            return 0xFF
        vga = self.vga
        if vga.sr[SR_MEMORY_MODE] & SR4_CHAIN4:
            return self.bytes[addr] if addr < self.size else 0xFF
        gr = vga.gr
        if gr[GR_MODE] & GR5_ODD_EVEN:
            plane = (gr[GR_READ_MAP] & 2) | (addr & 1)
            at = ((addr & ~1) << 1) | plane
            return self.bytes[at] if at < self.size else 0xFF
        if addr * 4 >= self.size:
            return 0xFF
        latch = self.latch = self.words[addr]
        if not gr[GR_MODE] & GR5_READ_MODE:
            return (latch >> (8 * (gr[GR_READ_MAP] & 3))) & 0xFF
        # Read mode 1: a 1 bit for every pixel whose colour matches the compare value in all the
        # planes the don't-care register selects.
        differ = (latch ^ _SPREAD[gr[GR_COLOR_COMPARE] & 0xF]) & _SPREAD[gr[GR_COLOR_DONT_CARE] & 0xF]
        differ |= differ >> 16
        differ |= differ >> 8
        return ~differ & 0xFF

    def write_byte(self, offset: int, value: int) -> None:
        addr = self._address(offset)
        if addr < 0:
            return
        vga = self.vga
        sr, gr = vga.sr, vga.gr
        if sr[SR_MEMORY_MODE] & SR4_CHAIN4:
            if sr[SR_MAP_MASK] & (1 << (addr & 3)) and addr < self.size:
                self.bytes[addr] = value
            return
        if gr[GR_MODE] & GR5_ODD_EVEN:
            plane = (gr[GR_READ_MAP] & 2) | (addr & 1)
            at = ((addr & ~1) << 1) | plane
            if sr[SR_MAP_MASK] & (1 << plane) and at < self.size:
                self.bytes[at] = value
            return
        if addr * 4 >= self.size:
            return
        latch = self.latch
        mode = gr[GR_MODE] & 3
        rotate = gr[GR_DATA_ROTATE] & 7
        if mode == 1:
            data = latch            # copies the latches as they are: no logic op, no bit mask
        else:
            if mode == 0:
                value = ((value >> rotate) | (value << (8 - rotate))) & 0xFF
                enable = _SPREAD[gr[GR_ENABLE_SET_RESET] & 0xF]
                data = (value * 0x01010101 & ~enable) | (_SPREAD[gr[GR_SET_RESET] & 0xF] & enable)
                bit_mask = gr[GR_BIT_MASK]
            elif mode == 2:
                data = _SPREAD[value & 0xF]
                bit_mask = gr[GR_BIT_MASK]
            else:
                value = ((value >> rotate) | (value << (8 - rotate))) & 0xFF
                data = _SPREAD[gr[GR_SET_RESET] & 0xF]
                bit_mask = gr[GR_BIT_MASK] & value
            op = gr[GR_DATA_ROTATE] >> 3 & 3
            if op == 1:
                data &= latch
            elif op == 2:
                data |= latch
            elif op == 3:
                data ^= latch
            bit_mask *= 0x01010101
            data = (data & bit_mask) | (latch & ~bit_mask)
        plane_mask = _SPREAD[sr[SR_MAP_MASK] & 0xF]
        words = self.words
        words[addr] = ((words[addr] & ~plane_mask) | (data & plane_mask)) & 0xFFFFFFFF

    # -- the Device protocol ---------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size == 1:
            return self.read_byte(offset)
        value = 0
        for i in range(size):
            value |= self.read_byte(offset + i) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 1:
            self.write_byte(offset, value & 0xFF)
            return
        for i in range(size):
            self.write_byte(offset + i, (value >> (8 * i)) & 0xFF)

    def reset(self) -> None:
        self.latch = 0

    def snapshot(self) -> dict:
        return {"latch": self.latch}

    def restore(self, state: dict) -> None:
        self.latch = int(state["latch"]) & 0xFFFFFFFF
