"""Colour lookup for rendering: the attribute controller's 16-entry palette in front of the DAC, and
the DAC's 256 entries with the PEL mask, as uint32 B,G,R,X pixels, cached until a register changes."""

from __future__ import annotations

import numpy as np


class PaletteCache:
    def __init__(self):
        self._key16 = self._key256 = None
        self._p16 = self._p256 = None

    def packed256(self, vga, eight_bit: bool) -> np.ndarray:
        dac = vga.dac
        key = (dac.generation, eight_bit)
        if key != self._key256:
            colors = dac.colors(eight_bit)
            self._p256 = colors[np.arange(256) & dac.pel_mask]
            self._key256 = key
        return self._p256

    def attribute16(self, vga) -> np.ndarray:
        """The 16 colours of text and planar modes: AR0-ARF, widened by the colour-select register."""
        ar = vga.ar
        key = (vga.dac.generation, bytes(ar))
        if key != self._key16:
            indices = np.frombuffer(bytes(ar[:16]), dtype=np.uint8).astype(np.int64)
            select = ar[0x14]
            if ar[0x10] & 0x80:                       # P5,P4 come from the colour-select register
                indices = (indices & 0x0F) | ((select & 0x03) << 4)
            indices = (indices & 0x3F) | ((select & 0x0C) << 4)
            self._p16 = self.packed256(vga, False)[indices]
            self._key16 = key
        return self._p16
