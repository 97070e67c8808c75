"""What the VGA is displaying, decoded from its registers: text, 16-colour planar, 256-colour or a
Bochs VBE mode, with the geometry, depth and memory layout the renderer and the surface need."""

from __future__ import annotations

from dataclasses import dataclass

from services.hw.display import dispi as d

TEXT, PLANAR, PACKED256, VBE = "text", "planar", "256", "vbe"

MAX_WIDTH, MAX_HEIGHT = d.MAX_XRES, d.MAX_YRES
FALLBACK = (640, 480)


@dataclass(frozen=True)
class DisplayMode:
    """`width` x `height` are the pixels the surface shows; `bpp` is the guest's colour depth (4 for
    text and planar modes). `start` and `stride` are VRAM byte offsets (planes interleaved for the
    legacy modes). Text modes also carry their character grid."""

    kind: str
    width: int
    height: int
    bpp: int
    start: int = 0
    stride: int = 0
    columns: int = 0
    rows: int = 0
    cell_width: int = 0
    cell_height: int = 0
    double_width: bool = False

    @property
    def geometry(self) -> tuple[int, int, int]:
        return self.width, self.height, self.bpp


def _crtc_lines(cr: bytearray) -> int:
    overflow = cr[0x07]
    return (cr[0x12] | (overflow & 0x02) << 7 | (overflow & 0x40) << 3) + 1


def decode(vga) -> DisplayMode:
    """The mode `vga` (a StdVga) is in. Register combinations that make no sense to a monitor give a
    640x480 planar mode rather than an error, as the guest may be halfway through programming them."""
    dispi = vga.dispi
    if dispi.enabled:
        regs = dispi.regs
        return DisplayMode(VBE, regs[d.XRES], regs[d.YRES], regs[d.BPP],
                           start=dispi.start_offset, stride=dispi.line_offset)
    sr, gr, cr = vga.sr, vga.gr, vga.cr
    start = ((cr[0x0C] << 8) | cr[0x0D]) * 4
    stride = cr[0x13] * 8
    lines = _crtc_lines(cr)
    columns = cr[0x01] + 1
    max_scan = (cr[0x09] & 0x1F) + 1
    if not gr[0x06] & 0x01:
        cell_width = 8 if sr[0x01] & 0x01 else 9
        double = bool(sr[0x01] & 0x08)
        rows = lines // max_scan
        width = columns * cell_width * (2 if double else 1)
        height = rows * max_scan
        if rows and width <= MAX_WIDTH and height <= MAX_HEIGHT:
            return DisplayMode(TEXT, width, height, 4, start=start, stride=stride, columns=columns,
                               rows=rows, cell_width=cell_width, cell_height=max_scan, double_width=double)
        return DisplayMode(PLANAR, *FALLBACK, 4, start=start, stride=stride)
    # In graphics modes the scanline counter repeats each row (max scan line, double scan) but the
    # memory address does not move, so the picture has lines / repeat rows of its own.
    repeat = max_scan * (2 if cr[0x09] & 0x80 else 1)
    height = max(lines // repeat, 1)
    if gr[0x05] & 0x40:
        kind, width, bpp = PACKED256, columns * 4, 8
    else:
        kind, width, bpp = PLANAR, columns * 8, 4
    if width > MAX_WIDTH or height > MAX_HEIGHT:
        return DisplayMode(PLANAR, *FALLBACK, 4, start=start, stride=stride)
    return DisplayMode(kind, width, height, bpp, start=start, stride=stride)
