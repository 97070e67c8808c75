"""Text-mode rendering: the character grid in planes 0/1, glyphs from the font the guest loaded into
plane 2 (turned into bitmaps once per font change), attributes with blink or bright background, cursor."""

from __future__ import annotations

import numpy as np

FONT_GLYPHS, GLYPH_STRIDE = 256, 32
BOX_DRAWING = slice(0xC0, 0xE0)       # characters whose 9th column repeats the 8th (line graphics)


def font_block_offset(block: int) -> int:
    """Planar address of font block 0-7 in plane 2 (blocks 0-3 at 16 KiB steps, 4-7 8 KiB after)."""
    return (block & 3) * 0x4000 + (block >> 2) * 0x2000


def font_blocks(sr3: int) -> tuple[int, int]:
    """(font for attribute bit 3 clear, font for it set) from the character map select register."""
    b = (sr3 & 0x03) | (sr3 >> 2 & 0x04)
    a = (sr3 >> 2 & 0x03) | (sr3 >> 3 & 0x04)
    return b, a


class GlyphCache:
    """Bitmaps (glyph, row, column) as uint8 0/1, rebuilt only when the font bytes, the cell size or
    the line-graphics bit change; checking the bytes costs microseconds and also catches fonts
    written through the LFB, which bypasses the legacy window."""

    def __init__(self):
        self._key = None
        self._fonts = None
        self.glyphs = None

    def get(self, vram: np.ndarray, blocks: tuple[int, int], cell_height: int, cell_width: int,
            line_graphics: bool) -> np.ndarray:
        fonts = []
        for block in dict.fromkeys(blocks):
            base = font_block_offset(block) * 4 + 2
            fonts.append(vram[base:base + FONT_GLYPHS * GLYPH_STRIDE * 4:4])
        key = (blocks, cell_height, cell_width, line_graphics)
        if key == self._key and all(np.array_equal(f, g) for f, g in zip(fonts, self._fonts)):
            return self.glyphs
        self._fonts = [f.copy() for f in fonts]
        self._key = key
        tables = []
        for font in self._fonts:
            rows = font.reshape(FONT_GLYPHS, GLYPH_STRIDE)[:, :min(cell_height, GLYPH_STRIDE)]
            bits = np.unpackbits(rows[..., None], axis=-1)              # (256, h, 8), MSB = leftmost
            if cell_height > GLYPH_STRIDE:
                bits = np.pad(bits, ((0, 0), (0, cell_height - GLYPH_STRIDE), (0, 0)))
            if cell_width == 9:
                ninth = np.zeros(bits.shape[:2] + (1,), dtype=np.uint8)
                if line_graphics:
                    ninth[BOX_DRAWING] = bits[BOX_DRAWING, :, 7:8]
                bits = np.concatenate([bits, ninth], axis=-1)
            tables.append(bits.astype(bool))
        self.glyphs = np.concatenate(tables) if len(tables) > 1 else tables[0]
        return self.glyphs


def render_text(vga, mode, out32: np.ndarray, vram: np.ndarray, palette16: np.ndarray,
                glyph_cache: GlyphCache, *, blink_on: bool = True, cursor_on: bool = True) -> None:
    """Draw `mode` (a text DisplayMode) into `out32` (height, width) uint32."""
    rows, cols = mode.rows, mode.columns
    ch, cw = mode.cell_height, mode.cell_width
    stride = mode.stride or cols * 4
    need = mode.start + (rows - 1) * stride + cols * 4
    if need <= vram.size:
        cells = np.lib.stride_tricks.as_strided(vram[mode.start:], shape=(rows, cols, 2),
                                                strides=(stride, 4, 1))
    else:
        padded = np.zeros(need - mode.start, dtype=np.uint8)
        avail = vram[mode.start:mode.start + padded.size] if mode.start < vram.size else vram[:0]
        padded[:avail.size] = avail
        cells = np.lib.stride_tricks.as_strided(padded, shape=(rows, cols, 2), strides=(stride, 4, 1))
    chars = cells[..., 0]
    attrs = cells[..., 1]

    ar_mode = vga.ar[0x10]
    blocks = font_blocks(vga.sr[0x03])
    glyphs = glyph_cache.get(vram, blocks, ch, cw, bool(ar_mode & 0x04))
    if blocks[0] != blocks[1]:
        # Attribute bit 3 picks the second glyph table (font A) when the two fonts differ.
        index = chars.astype(np.intp) + ((attrs.astype(np.intp) & 0x08) << 5)
    else:
        index = chars

    fg = palette16[attrs & 0x0F]
    if ar_mode & 0x08:
        bg = palette16[(attrs >> 4) & 0x07]
        if not blink_on:
            fg = np.where(attrs & 0x80, bg, fg)
    else:
        bg = palette16[attrs >> 4]

    bitmap = glyphs[index]                                             # (rows, cols, ch, cw)
    cells_px = np.where(bitmap, fg[:, :, None, None], bg[:, :, None, None])
    picture = cells_px.transpose(0, 2, 1, 3).reshape(rows * ch, cols * cw)
    if mode.double_width:
        picture = np.repeat(picture, 2, axis=1)
    out32[:rows * ch, :picture.shape[1]] = picture

    cr = vga.cr
    if cursor_on and not cr[0x0A] & 0x20:
        position = ((cr[0x0E] << 8) | cr[0x0F]) - mode.start // 4
        per_row = stride // 4
        row, col = divmod(position, per_row) if per_row else (-1, -1)
        first, last = cr[0x0A] & 0x1F, min(cr[0x0B] & 0x1F, ch - 1)
        if 0 <= row < rows and 0 <= col < cols and first <= last:
            scale = 2 if mode.double_width else 1
            x = col * cw * scale
            out32[row * ch + first:row * ch + last + 1, x:x + cw * scale] = fg[row, col]


def screen_text(vga) -> list[str] | None:
    """The characters of the text-mode screen, one string per row (CP437), or None in a graphics
    mode: what a person reads on the console, for logs and tests."""
    mode = vga.mode()
    if mode.kind != "text":
        return None
    vram = np.frombuffer(vga.vram.buf if hasattr(vga.vram, "buf") else vga.vram, dtype=np.uint8)
    stride = mode.stride or mode.columns * 4
    rows = []
    for row in range(mode.rows):
        start = mode.start + row * stride
        chars = vram[start:start + mode.columns * 4:4]
        rows.append(bytes(chars).decode("cp437").rstrip())
    return rows
