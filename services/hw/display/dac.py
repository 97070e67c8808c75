"""The VGA DAC (ports 0x3C6-0x3C9): 256 palette entries written and read three components at a time,
6 bits per component unless the Bochs 8-bit DAC switch is on, and their conversion to B,G,R,X pixels."""

from __future__ import annotations

import numpy as np

ENTRIES = 256


def _expand6() -> np.ndarray:
    # 6-bit components reach full scale by replicating their top bits into the low ones (63 -> 255).
    v = np.arange(256, dtype=np.uint32) & 0x3F
    return (v << 2) | (v >> 4)


_SIX_TO_EIGHT = _expand6()


class Dac:
    """Palette RAM with the read/write index state machine of ports 0x3C7/0x3C8/0x3C9."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.palette = bytearray(ENTRIES * 3)
        self.pel_mask = 0xFF
        self.read_index = 0
        self.write_index = 0
        self.component = 0
        self.state = 0            # what port 0x3C7 reads back: 0 = write mode, 3 = read mode
        self.pending = bytearray(3)
        self.generation = 0       # bumped on every palette change, lets renderers cache conversions

    def set_write_index(self, value: int) -> None:
        self.write_index = value & 0xFF
        self.component = 0
        self.state = 0

    def set_read_index(self, value: int) -> None:
        self.read_index = value & 0xFF
        self.component = 0
        self.state = 3

    def write_data(self, value: int) -> None:
        # Real DACs latch all three components and store them together, so a half-written entry is
        # never displayed.
        self.pending[self.component] = value & 0xFF
        self.component += 1
        if self.component == 3:
            at = self.write_index * 3
            self.palette[at:at + 3] = self.pending
            self.write_index = (self.write_index + 1) & 0xFF
            self.component = 0
            self.generation += 1

    def read_data(self) -> int:
        value = self.palette[self.read_index * 3 + self.component]
        self.component += 1
        if self.component == 3:
            self.read_index = (self.read_index + 1) & 0xFF
            self.component = 0
        return value

    def colors(self, eight_bit: bool = False) -> np.ndarray:
        """The 256 entries as uint32 0x00RRGGBB (B,G,R,X bytes in memory), before the PEL mask."""
        rgb = np.frombuffer(bytes(self.palette), dtype=np.uint8).reshape(ENTRIES, 3).astype(np.uint32)
        if not eight_bit:
            rgb = _SIX_TO_EIGHT[rgb]
        return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]

    def snapshot(self) -> dict:
        return {"palette": bytes(self.palette), "pel_mask": self.pel_mask, "read_index": self.read_index,
                "write_index": self.write_index, "component": self.component, "state": self.state,
                "pending": bytes(self.pending)}

    def restore(self, state: dict) -> None:
        palette = bytes(state["palette"])
        if len(palette) != ENTRIES * 3:
            raise ValueError(f"DAC state has {len(palette)} palette bytes, expected {ENTRIES * 3}")
        self.palette[:] = palette
        self.pel_mask = int(state["pel_mask"]) & 0xFF
        self.read_index = int(state["read_index"]) & 0xFF
        self.write_index = int(state["write_index"]) & 0xFF
        self.component = int(state["component"]) % 3
        self.state = int(state["state"]) & 3
        self.pending[:] = bytes(state["pending"])[:3].ljust(3, b"\0")
        self.generation += 1
