"""Turns the VGA's state into a picture: (height, width, 4) uint8 in B,G,R,X order, the RDP server's
native 32-bit format, for text, planar 16-colour, 256-colour and VBE 4/8/15/16/24/32 bpp modes."""

from __future__ import annotations

import numpy as np

from services.hw.display import mode as modes
from services.hw.display.palette import PaletteCache
from services.hw.display.text import GlyphCache, render_text

CURSOR_PERIOD = 16 / 60         # seconds per cursor blink phase (16 frames at 60 Hz)
BLINK_PERIOD = 32 / 60          # blinking characters toggle at half the cursor rate


def _lut_565() -> np.ndarray:
    v = np.arange(1 << 16, dtype=np.uint32)
    r, g, b = v >> 11 & 0x1F, v >> 5 & 0x3F, v & 0x1F
    return ((r << 3 | r >> 2) << 16) | ((g << 2 | g >> 4) << 8) | (b << 3 | b >> 2)


def _lut_555() -> np.ndarray:
    v = np.arange(1 << 16, dtype=np.uint32)
    r, g, b = v >> 10 & 0x1F, v >> 5 & 0x1F, v & 0x1F
    return ((r << 3 | r >> 2) << 16) | ((g << 3 | g >> 2) << 8) | (b << 3 | b >> 2)


def _lut_planar() -> np.ndarray:
    """For two planes' bytes as one uint16 (low byte = lower plane): the 8 two-bit pixel values."""
    v = np.arange(1 << 16, dtype=np.uint32)
    shifts = np.arange(7, -1, -1, dtype=np.uint32)
    low = (v[:, None] >> shifts) & 1
    high = (v[:, None] >> (shifts + 8)) & 1
    return (low | high << 1).astype(np.uint8)


class Renderer:
    """Renders one StdVga. Keeps the caches (glyph bitmaps, palettes, colour tables) between frames."""

    def __init__(self, vga):
        self.vga = vga
        self.vram = np.frombuffer(vga.vram, dtype=np.uint8)
        self.glyphs = GlyphCache()
        self.palettes = PaletteCache()
        self._lut16 = self._lut15 = self._lut_planar = None

    def render(self, out=None, *, now: float | None = None, mode=None) -> np.ndarray:
        """Render the current frame into `out` (a (h, w, 4) uint8 array, or any writable buffer of at
        least h*w*4 bytes) or a new array; returns the (h, w, 4) view. `now` (seconds) drives cursor
        and character blinking; None shows both steadily, which keeps frames comparable."""
        vga = self.vga
        mode = mode or vga.mode()
        h, w = mode.height, mode.width
        frame = self._target(out, h, w)
        out32 = frame.view(np.uint32).reshape(h, w)
        if vga.blanked:
            out32.fill(0)
            return frame
        if mode.kind == modes.TEXT:
            blink_on = cursor_on = True
            if now is not None:
                cursor_on = int(now / CURSOR_PERIOD) % 2 == 0
                blink_on = int(now / BLINK_PERIOD) % 2 == 0
            render_text(vga, mode, out32, self.vram, self.palettes.attribute16(vga), self.glyphs,
                        blink_on=blink_on, cursor_on=cursor_on)
        elif mode.kind == modes.PLANAR or (mode.kind == modes.VBE and mode.bpp == 4):
            self._planar(mode, out32)
        elif mode.kind == modes.PACKED256:
            self._packed8(mode, out32, self.palettes.packed256(vga, vga.eight_bit_dac))
        else:
            self._vbe(mode, frame, out32)
        return frame

    @staticmethod
    def _target(out, h: int, w: int) -> np.ndarray:
        if out is None:
            return np.zeros((h, w, 4), dtype=np.uint8)
        if isinstance(out, np.ndarray) and out.shape == (h, w, 4) and out.dtype == np.uint8:
            return out
        flat = np.frombuffer(out, dtype=np.uint8) if not isinstance(out, np.ndarray) else out.reshape(-1)
        if flat.size < h * w * 4:
            raise ValueError(f"the output buffer holds {flat.size} bytes, a {w}x{h} frame needs {h * w * 4}")
        return flat[:h * w * 4].reshape(h, w, 4)

    def _rows(self, start: int, stride: int, rows: int, row_bytes: int) -> np.ndarray:
        """VRAM bytes of `rows` scanlines as a (rows, row_bytes) view; zero-padded past the end."""
        vram = self.vram
        need = start + (rows - 1) * stride + row_bytes
        source = vram[start:] if start < vram.size else vram[:0]
        if need > vram.size:
            padded = np.zeros(need - start, dtype=np.uint8)
            padded[:source.size] = source[:padded.size]
            source = padded
        return np.lib.stride_tricks.as_strided(source, shape=(rows, row_bytes), strides=(stride, 1))

    def _planar(self, mode, out32: np.ndarray) -> None:
        h, w = mode.height, mode.width
        groups = w // 8
        raw = self._rows(mode.start, mode.stride or groups * 4, h, groups * 4)
        words = np.ascontiguousarray(raw).view(np.uint32)              # (h, groups): planes 0..3
        if self._lut_planar is None:
            self._lut_planar = _lut_planar()
        lut = self._lut_planar
        index = lut[words & 0xFFFF] | (lut[words >> 16] << 2)           # (h, groups, 8)
        index &= self.vga.ar[0x12] & 0x0F                               # colour plane enable
        out32[:, :groups * 8] = self.palettes.attribute16(self.vga)[index.reshape(h, groups * 8)]

    def _packed8(self, mode, out32: np.ndarray, palette: np.ndarray) -> None:
        h, w = mode.height, mode.width
        out32[:] = palette[self._rows(mode.start, mode.stride or w, h, w)]

    def _vbe(self, mode, frame: np.ndarray, out32: np.ndarray) -> None:
        h, w, bpp = mode.height, mode.width, mode.bpp
        if bpp == 8:
            self._packed8(mode, out32, self.palettes.packed256(self.vga, self.vga.eight_bit_dac))
        elif bpp == 32:
            frame.reshape(h, w * 4)[:] = self._rows(mode.start, mode.stride, h, w * 4)
        elif bpp == 24:
            # Each pixel read as an unaligned 32-bit word whose top byte belongs to the next pixel:
            # one strided load instead of three byte-plane copies.
            source, offset, stride = self.vram, mode.start, mode.stride
            if offset + (h - 1) * stride + w * 3 + 1 > source.size:
                source = np.ascontiguousarray(self._rows(offset, stride, h, w * 3 + 1))
                offset, stride = 0, w * 3 + 1
            words = np.ndarray((h, w), dtype="<u4", buffer=source, offset=offset, strides=(stride, 3))
            np.bitwise_and(words, 0xFFFFFF, out=out32)
        elif bpp in (15, 16):
            if bpp == 16:
                lut = self._lut16 = _lut_565() if self._lut16 is None else self._lut16
            else:
                lut = self._lut15 = _lut_555() if self._lut15 is None else self._lut15
            pixels = np.ascontiguousarray(self._rows(mode.start, mode.stride, h, w * 2)).view(np.uint16)
            out32[:] = lut[pixels]
