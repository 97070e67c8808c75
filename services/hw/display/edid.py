"""An EDID 1.4 base block describing the virtual monitor (preferred mode, ranges, name), served in
the std VGA's BAR2 so guest drivers (Linux bochs-drm, SeaVGABIOS) learn the preferred resolution."""

from __future__ import annotations

import math

HEADER = b"\x00\xff\xff\xff\xff\xff\xff\x00"
# sRGB primaries and white point in EDID's packed 10-bit form.
SRGB_CHROMATICITY = bytes([0xEE, 0x91, 0xA3, 0x54, 0x4C, 0x99, 0x26, 0x0F, 0x50, 0x54])
REFRESH_HZ = 60


def _manufacturer(code: str) -> bytes:
    value = 0
    for letter in code.upper():
        value = value << 5 | (ord(letter) - ord("A") + 1)
    return value.to_bytes(2, "big")


def _standard_timing(width: int, aspect: tuple[int, int]) -> bytes:
    ratios = {(16, 10): 0, (4, 3): 1, (5, 4): 2, (16, 9): 3}
    return bytes([width // 8 - 31, ratios[aspect] << 6 | (REFRESH_HZ - 60)])


def _detailed_timing(width: int, height: int, width_mm: int, height_mm: int) -> bytes:
    # Reduced blanking in the style of CVT-RB: a virtual monitor has no beam to fly back, so the
    # exact porches only need to be plausible and keep the pixel clock low.
    h_blank, h_front, h_sync = 160, 48, 32
    v_front, v_sync = 3, 6
    v_blank = max(v_front + v_sync + 6, math.ceil(460e-6 * REFRESH_HZ * height / (1 - 460e-6 * REFRESH_HZ)))
    clock = math.ceil((width + h_blank) * (height + v_blank) * REFRESH_HZ / 10_000)
    return bytes([
        clock & 0xFF, clock >> 8,
        width & 0xFF, h_blank & 0xFF, (width >> 8) << 4 | h_blank >> 8,
        height & 0xFF, v_blank & 0xFF, (height >> 8) << 4 | v_blank >> 8,
        h_front & 0xFF, h_sync & 0xFF, (v_front & 0xF) << 4 | (v_sync & 0xF),
        (h_front >> 8) << 6 | (h_sync >> 8) << 4 | (v_front >> 4) << 2 | v_sync >> 4,
        width_mm & 0xFF, height_mm & 0xFF, (width_mm >> 8) << 4 | height_mm >> 8,
        0, 0,
        0x1A,          # digital separate sync, +hsync -vsync (the CVT-RB convention)
    ])


def _text_descriptor(tag: int, text: str) -> bytes:
    body = text.encode("ascii")[:13]
    if len(body) < 13:
        body += b"\n" + b" " * (12 - len(body))
    return bytes([0, 0, 0, tag, 0]) + body


def build_edid(width: int = 1024, height: int = 768, *, name: str = "Headbox", serial: int = 0,
               max_width: int = 2560, max_height: int = 1600) -> bytes:
    """128 bytes: preferred mode `width`x`height`@60, the common VESA modes, range limits up to
    `max_width`x`max_height`, and the monitor name."""
    dpi_mm = 0.2646                               # 96 dpi, so guests pick a 100% scale
    width_mm, height_mm = round(width * dpi_mm), round(height * dpi_mm)
    block = bytearray(HEADER)
    block += _manufacturer("HBX") + (1).to_bytes(2, "little") + serial.to_bytes(4, "little")
    block += bytes([0, 2024 - 1990, 1, 4])        # week, year, EDID 1.4
    block += bytes([0xA5, math.ceil(width_mm / 10), math.ceil(height_mm / 10), 120, 0x06])
    block += SRGB_CHROMATICITY
    block += bytes([0x21, 0x08, 0x00])            # 640x480, 800x600, 1024x768 at 60 Hz
    standard = [_standard_timing(1280, (5, 4)), _standard_timing(1280, (16, 9)),
                _standard_timing(1440, (16, 10)), _standard_timing(1600, (4, 3)),
                _standard_timing(1680, (16, 10)), _standard_timing(1920, (16, 9)),
                _standard_timing(1920, (16, 10))]
    block += b"".join(standard) + b"\x01\x01" * (8 - len(standard))
    block += _detailed_timing(width, height, width_mm, height_mm)
    top_clock = math.ceil((max_width + 160) * (max_height + 50) * REFRESH_HZ / 10_000_000)
    block += bytes([0, 0, 0, 0xFD, 0, 50, 125, 30, 160, top_clock, 0x01, 0x0A]) + b" " * 6
    block += _text_descriptor(0xFC, name)
    block += bytes([0, 0, 0, 0x10, 0]) + bytes(13)
    block += b"\x00"                              # no extension blocks
    block.append(-sum(block) & 0xFF)
    assert len(block) == 128
    return bytes(block)
