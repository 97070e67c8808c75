"""A VGA card driven through its ports and window the way a VGA BIOS does (register sets of modes
3, 12h and 13h, a font loaded into plane 2), and distinctive test glyphs; for the display tests."""

import numpy as np

from services.hw.bus import Bus
from services.hw.display import dispi
from services.hw.display.render import Renderer
from services.hw.display.vga import StdVga
from services.ipc.shm import PrivateRegion

VRAM = 16 << 20


# Standard register sets from the VGA reference (misc, sequencer 0-4, CRTC 0-0x18, GC 0-8, AC 0-0x14).
MODE3 = (0x67, [0x03, 0x00, 0x03, 0x00, 0x02],
         [0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00, 0x00, 0x00,
          0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF],
         [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x00, 0xFF],
         [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F,
          0x0C, 0x00, 0x0F, 0x08, 0x00])


MODE12 = (0xE3, [0x03, 0x01, 0x0F, 0x00, 0x06],
          [0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0x0B, 0x3E, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
           0xEA, 0x8C, 0xDF, 0x28, 0x00, 0xE7, 0x04, 0xE3, 0xFF],
          [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0F, 0xFF],
          [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F,
           0x01, 0x00, 0x0F, 0x00, 0x00])


MODE13 = (0x63, [0x03, 0x01, 0x0F, 0x00, 0x0E],
          [0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0xBF, 0x1F, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
           0x9C, 0x0E, 0x8F, 0x28, 0x40, 0x96, 0xB9, 0xA3, 0xFF],
          [0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0F, 0xFF],
          list(range(16)) + [0x41, 0x00, 0x0F, 0x00, 0x00])


# The 16 text colours in the DAC entries the attribute palette above points at (6-bit components).
EGA = {0x00: (0, 0, 0), 0x01: (0, 0, 42), 0x02: (0, 42, 0), 0x03: (0, 42, 42), 0x04: (42, 0, 0),
       0x05: (42, 0, 42), 0x14: (42, 21, 0), 0x07: (42, 42, 42), 0x38: (21, 21, 21), 0x39: (21, 21, 63),
       0x3A: (21, 63, 21), 0x3B: (21, 63, 63), 0x3C: (63, 21, 21), 0x3D: (63, 21, 63),
       0x3E: (63, 63, 21), 0x3F: (63, 63, 63)}


def bgrx(r6, g6, b6):
    up = lambda c: (c << 2) | (c >> 4)
    return (up(r6) << 16) | (up(g6) << 8) | up(b6)


def text_colour(index):
    return bgrx(*EGA[MODE3[4][index]])


class Guest:
    """Drives a card through its ports and window the way a VGA BIOS does."""

    def __init__(self):
        self.vga = StdVga(PrivateRegion(VRAM))
        self.bus = Bus()
        self.vga.attach(self.bus)
        self.renderer = Renderer(self.vga)

    def out(self, port, value, size=1):
        self.bus.pio_write(port, size, value)

    def seq(self, index, value):
        self.out(0x3C4, index | value << 8, 2)

    def gfx(self, index, value):
        self.out(0x3CE, index | value << 8, 2)

    def crtc(self, index, value):
        self.out(0x3D4, index | value << 8, 2)

    def poke(self, addr, value, size=1):
        self.bus.mmio_write(addr, size, value)

    def dac(self, index, rgb):
        self.out(0x3C8, index)
        for c in rgb:
            self.out(0x3C9, c)

    def set_mode(self, table):
        misc, sr, cr, gr, ar = table
        self.bus.pio_read(0x3DA, 1)
        self.out(0x3C0, 0x00)                        # palette source off while programming
        self.out(0x3C2, misc)
        for i, v in enumerate(sr):
            self.seq(i, v)
        self.crtc(0x11, 0x00)                        # unlock CR0-7
        for i, v in enumerate(cr):
            self.crtc(i, v)
        for i, v in enumerate(gr):
            self.gfx(i, v)
        self.bus.pio_read(0x3DA, 1)
        for i, v in enumerate(ar):
            self.out(0x3C0, i)
            self.out(0x3C0, v)
        self.out(0x3C0, 0x20)

    def load_font(self, glyphs, height=16, block=0):
        """SeaVGABIOS's stdvga_load_font: plane 2 alone, no odd/even, A0000 64 KiB, 32-byte stride."""
        self.seq(0x00, 0x01)
        self.seq(0x02, 0x04)
        self.seq(0x04, 0x07)
        self.seq(0x00, 0x03)
        self.gfx(0x04, 0x02)
        self.gfx(0x05, 0x00)
        self.gfx(0x06, 0x04)
        base = 0xA0000 + ((block & 3) << 14) + ((block & 4) << 11)
        for ch, rows in glyphs.items():
            for line in range(height):
                self.poke(base + ch * 32 + line, rows[line] if line < len(rows) else 0)
        self.seq(0x00, 0x01)
        self.seq(0x02, 0x03)
        self.seq(0x04, 0x03)
        self.seq(0x00, 0x03)
        self.gfx(0x06, 0x0E)
        self.gfx(0x04, 0x00)
        self.gfx(0x05, 0x10)

    def text_mode(self, font):
        self.set_mode(MODE3)
        for index, rgb in EGA.items():
            self.dac(index, rgb)
        self.load_font(font)

    def put(self, row, col, text, attr):
        for i, c in enumerate(text):
            self.poke(0xB8000 + 2 * (row * 80 + col + i), ord(c) | attr << 8, 2)

    def dispi(self, index, value):
        self.out(0x1CE, index, 2)
        self.out(0x1CF, value, 2)

    def vbe(self, width, height, bpp, flags=0):
        self.dispi(dispi.ENABLE, 0)
        self.dispi(dispi.BPP, bpp)
        self.dispi(dispi.XRES, width)
        self.dispi(dispi.YRES, height)
        self.dispi(dispi.ENABLE, dispi.ENABLED | dispi.LFB_ENABLED | flags)

    def render(self, **kw):
        return self.renderer.render(**kw).view(np.uint32)[..., 0]


# Distinctive 8x16 test glyphs (not a real font): a full block, an 'H'-like shape, a diagonal.
SOLID = [0xFF] * 16


H_SHAPE = [0x00, 0x00] + [0x81] * 5 + [0xFF] * 2 + [0x81] * 5 + [0x00, 0x00]


DIAGONAL = [1 << (7 - (i % 8)) for i in range(16)]


BOX = [0x00] * 7 + [0xFF] * 2 + [0x00] * 7        # a horizontal line, as in box-drawing characters


FONT = {0xDB: SOLID, ord("H"): H_SHAPE, ord("/"): DIAGONAL, 0xC4: BOX, 0x20: [0] * 16}
