"""Descriptor rings in guest memory and the SWSTYLE layouts of their entries (0: LANCE, 8 bytes;
2 and ILACC's 1: buffer address first; 3: buffer address last), all seen through style 2's status word."""

from __future__ import annotations

import struct
from typing import Callable, NamedTuple

RECEIVE, TRANSMIT = "receive", "transmit"
RING_REGISTER_PARTS = BASE_LOW, BASE_HIGH, LENGTH, POSITION = "base low", "base high", "length", "position"
MAX_BUFFER = 4096
_STYLE_0 = struct.Struct("<HBBH")
_STYLE_32 = struct.Struct("<III")


class Descriptor(NamedTuple):
    buffer: int         # guest address of the buffer
    status: int         # OWN, ERR, STP, ENP... (RMD1/TMD1 bits 31-16)
    count: int          # BCNT with its ONES: the buffer length's two's complement in 16 bits


def buffer_length(count: int) -> int:
    """0 is an empty buffer; a count whose top bits are not ones is corrupt and used as empty."""
    length = -count & 0xFFFF
    return length if length <= MAX_BUFFER else 0


class Ring:
    """Where a ring is (base, number of entries), the entry the chip looks at next, and the
    layout of its entries (`style`; `upper` = address bits 31-24 for style 0's 24-bit addresses)."""

    __slots__ = ("base", "count", "index", "style", "upper")

    def __init__(self):
        self.style = self.upper = 0
        self.clear()

    def clear(self) -> None:
        self.base = self.count = self.index = 0

    def address(self, index: int) -> int:
        return (self.base + (index << (3 if self.style == 0 else 4))) & 0xFFFFFFFF

    def advance(self, index: int) -> int:
        index += 1
        return 0 if index >= self.count else index

    def load(self, memory, index: int) -> Descriptor:
        """Raises ValueError when the entry is not in guest RAM."""
        at = self.address(index)
        if self.style == 0:
            low, high, status, count = _STYLE_0.unpack(memory.read(at, 6))
            return Descriptor(self.upper | high << 16 | low, status << 8, count)
        first, word, third = _STYLE_32.unpack(memory.read(at, 12))
        return Descriptor(third if self.style == 3 else first, word >> 16, word & 0xFFFF)

    def store(self, memory, index: int, status: int, extra: int | None, kind: str,
              written: Callable[[int, int], None]) -> None:
        """Hand an entry back: `extra` (RMD2's message byte count or TMD2's error bits, style 2
        numbering; None leaves it alone) first, then the status word, so OWN clears last.
        Raises ValueError when the entry is not in guest RAM."""
        at = self.address(index)
        if self.style == 0:
            if extra is not None:
                word = extra >> 16 if kind == TRANSMIT else extra & 0xFFFF
                memory.write(at + 6, word.to_bytes(2, "little"))
                written(at + 6, 2)
            memory.write(at + 3, bytes((status >> 8,)))
            written(at + 3, 1)
            return
        if extra is not None:
            extra_at = at if self.style == 3 else at + 8
            memory.write(extra_at, (extra & 0xFFFFFFFF).to_bytes(4, "little"))
            written(extra_at, 4)
        memory.write(at + 6, (status & 0xFFFF).to_bytes(2, "little"))
        written(at + 6, 2)

    def read_register(self, part: str) -> int:
        if part == BASE_LOW:
            return self.base & 0xFFFF
        if part == BASE_HIGH:
            return self.base >> 16
        if part == LENGTH:
            return -self.count & 0xFFFF         # RCVRL/XMTRL hold the length's two's complement
        return self.index

    def write_register(self, part: str, value: int) -> None:
        """A driver may place a ring through CSRs instead of an init block ("alternative init")."""
        if part == BASE_LOW:
            self.base = (self.base & 0xFFFF0000) | value
        elif part == BASE_HIGH:
            self.base = (self.base & 0xFFFF) | value << 16
        elif part == LENGTH:
            self.count = -value & 0xFFFF
            if self.index >= self.count:
                self.index = 0
        else:
            self.index = value if value < self.count else 0

    def snapshot(self) -> list[int]:
        return [self.base, self.count, self.index]

    def restore(self, state: list) -> None:
        base, count, index = (int(v) for v in state)
        self.base, self.count = base & 0xFFFFFFFF, max(0, min(count, 0xFFFF))
        self.index = index if 0 <= index < self.count else 0
