"""Rendering: text with a font loaded into plane 2 as SeaVGABIOS loads it (attributes, blink, cursor),
mode 13h and 12h pictures drawn through the legacy window, VBE modes at every depth, and timings."""

import time

import numpy as np
import pytest

from services.hw.display import dispi
from tests.support.vga_guest import (
    BOX,
    DIAGONAL,
    EGA,
    FONT,
    H_SHAPE,
    MODE12,
    MODE13,
    SOLID,
    Guest,
    bgrx,
    text_colour,
)


def cell(frame, row, col, w=9, h=16):
    return frame[row * h:(row + 1) * h, col * w:(col + 1) * w]


def expected_cell(rows, fg, bg, ninth=False):
    bits = np.unpackbits(np.array(rows, dtype=np.uint8)[:, None], axis=1)
    ninth_col = bits[:, 7:8] if ninth else np.zeros((16, 1), dtype=np.uint8)
    return np.where(np.concatenate([bits, ninth_col], axis=1) == 1, fg, bg).astype(np.uint32)


@pytest.fixture
def text():
    guest = Guest()
    guest.text_mode(FONT)
    guest.crtc(0x0E, 1999 >> 8)                     # park the cursor in the last cell
    guest.crtc(0x0F, 1999 & 0xFF)
    return guest


def test_text_mode_geometry(text):
    mode = text.vga.mode()
    assert (mode.kind, mode.width, mode.height, mode.columns, mode.rows) == ("text", 720, 400, 80, 25)


def test_text_glyphs_come_from_plane2_with_their_attributes(text):
    text.put(0, 0, "H/", 0x1E)                      # yellow on blue
    text.put(3, 10, "H", 0x4F)                      # bright white on red
    frame = text.render()
    assert frame.shape == (400, 720)
    np.testing.assert_array_equal(cell(frame, 0, 0), expected_cell(H_SHAPE, text_colour(14), text_colour(1)))
    np.testing.assert_array_equal(cell(frame, 0, 1), expected_cell(DIAGONAL, text_colour(14), text_colour(1)))
    np.testing.assert_array_equal(cell(frame, 3, 10), expected_cell(H_SHAPE, text_colour(15), text_colour(4)))
    assert (cell(frame, 5, 5) == text_colour(0)).all()


def test_ninth_column_repeats_line_graphics_only(text):
    text.put(1, 0, "\xc4", 0x07)
    text.put(1, 1, "H", 0x07)
    frame = text.render()
    fg, bg = text_colour(7), text_colour(0)
    np.testing.assert_array_equal(cell(frame, 1, 0), expected_cell(BOX, fg, bg, ninth=True))
    np.testing.assert_array_equal(cell(frame, 1, 1), expected_cell(H_SHAPE, fg, bg))


def test_blink_attribute_or_bright_background(text):
    text.put(2, 0, "H", 0x9E)                       # blink bit set, background 1
    frame = text.render(now=0.0)
    np.testing.assert_array_equal(cell(frame, 2, 0), expected_cell(H_SHAPE, text_colour(14), text_colour(1)))
    hidden = text.render(now=0.6)                   # second blink phase: foreground hidden
    assert (cell(hidden, 2, 0) == text_colour(1)).all()
    text.bus.pio_read(0x3DA, 1)
    text.out(0x3C0, 0x30)
    text.out(0x3C0, 0x04)                           # mode control: blink off -> bright backgrounds
    frame = text.render(now=0.6)
    np.testing.assert_array_equal(cell(frame, 2, 0), expected_cell(H_SHAPE, text_colour(14), text_colour(9)))


def test_cursor_shape_position_and_off_bit(text):
    text.put(4, 7, " ", 0x0A)                       # light green on black
    text.crtc(0x0E, (4 * 80 + 7) >> 8)
    text.crtc(0x0F, (4 * 80 + 7) & 0xFF)
    frame = text.render()
    c = cell(frame, 4, 7)
    assert (c[13:15] == text_colour(10)).all()      # scanlines 0x0D-0x0E
    assert (c[:13] == text_colour(0)).all() and (c[15] == text_colour(0)).all()
    assert (text.render(now=0.3)[4 * 16 + 13, 7 * 9] == text_colour(0))   # blink phase off
    text.crtc(0x0A, 0x20)
    assert (cell(text.render(), 4, 7) == text_colour(0)).all()


def test_start_address_scrolls_and_8_dot_80x50(text):
    text.put(1, 0, "H", 0x07)
    text.crtc(0x0C, 0)
    text.crtc(0x0D, 80)                             # start at row 1
    np.testing.assert_array_equal(cell(text.render(), 0, 0), expected_cell(H_SHAPE, text_colour(7), 0))
    text.seq(0x01, 0x01)                            # 8-dot cells
    text.crtc(0x09, 0x47)                           # 8 scanlines per row -> 50 rows
    mode = text.vga.mode()
    assert (mode.width, mode.height, mode.rows, mode.cell_width) == (640, 400, 50, 8)
    frame = text.render()
    bits = np.unpackbits(np.array(H_SHAPE[:8], dtype=np.uint8)[:, None], axis=1)
    np.testing.assert_array_equal(frame[:8, :8], np.where(bits == 1, text_colour(7), 0))


def test_40_column_text_doubles_pixels(text):
    text.seq(0x01, 0x08)
    text.crtc(0x11, 0x0E)                           # unlock CR0-7
    text.crtc(0x01, 39)
    text.crtc(0x13, 20)
    text.put(0, 0, "\xdb", 0x0C)
    mode = text.vga.mode()
    assert (mode.columns, mode.width) == (40, 720)
    frame = text.render()
    # 0xDB is a line-graphics character: its 9th column repeats, so the block is 18 pixels wide.
    assert (frame[:16, :18] == text_colour(12)).all() and (frame[:16, 18:20] == 0).all()


def test_second_font_selected_by_attribute_bit3(text):
    text.load_font({ord("H"): SOLID}, block=1)
    text.seq(0x03, 0x04)                            # map A (attr bit 3 set) = block 1, map B = block 0
    text.put(0, 0, "H", 0x07)
    text.put(0, 1, "H", 0x0F)
    frame = text.render()
    np.testing.assert_array_equal(cell(frame, 0, 0), expected_cell(H_SHAPE, text_colour(7), 0))
    assert (cell(frame, 0, 1)[:, :8] == text_colour(15)).all()


def test_font_change_is_picked_up(text):
    text.put(0, 0, "H", 0x07)
    text.render()
    text.load_font({ord("H"): SOLID})
    assert (cell(text.render(), 0, 0)[:, :8] == text_colour(7)).all()


def test_blanked_screen_is_black(text):
    text.put(0, 0, "\xdb", 0x0F)
    text.bus.pio_read(0x3DA, 1)
    text.out(0x3C0, 0x00)                           # palette source cleared
    assert not text.render().any()


def test_mode13h_through_chain4(text):
    g = Guest()
    g.set_mode(MODE13)
    g.dac(0x2A, (63, 0, 21))
    g.dac(0x07, (10, 20, 30))
    mode = g.vga.mode()
    assert (mode.kind, mode.width, mode.height, mode.bpp) == ("256", 320, 200, 8)
    g.poke(0xA0000 + 199 * 320 + 319, 0x2A)
    g.poke(0xA0000 + 10 * 320 + 5, 0x0707, 2)
    frame = g.render()
    assert frame.shape == (200, 320)
    assert frame[199, 319] == bgrx(63, 0, 21)
    assert frame[10, 5] == frame[10, 6] == bgrx(10, 20, 30)
    assert frame[0, 0] == 0


def test_mode12h_planar_with_set_reset_bit_mask_and_latches():
    g = Guest()
    g.set_mode(MODE12)
    for index, rgb in EGA.items():
        g.dac(index, rgb)
    assert g.vga.mode().geometry == (640, 480, 4)
    # Fill byte 0 of row 100 (pixels 0-7) with colour 9 the way a BIOS plots: set/reset, all bits.
    row = 0xA0000 + 100 * 80
    g.gfx(0, 0x09)
    g.gfx(1, 0x0F)
    g.gfx(8, 0xFF)
    g.poke(row, 0)
    # Then recolour only pixels 2-3 to colour 4, keeping the others through the latches.
    g.gfx(0, 0x04)
    g.gfx(8, 0x30)
    g.bus.mmio_read(row, 1)
    g.poke(row, 0)
    frame = g.render()
    assert frame.shape == (480, 640)
    line = frame[100, :9]
    assert list(line) == [text_colour(9)] * 2 + [text_colour(4)] * 2 + [text_colour(9)] * 4 + [0]
    # Write mode 2 puts a colour per pixel from the data nibble.
    g.gfx(5, 0x02)
    g.gfx(8, 0x01)
    g.bus.mmio_read(row + 79, 1)
    g.poke(row + 79, 0x0E)
    assert g.render()[100, 639] == text_colour(14)
    # The colour-plane enable register masks planes out.
    g.bus.pio_read(0x3DA, 1)
    g.out(0x3C0, 0x12)
    g.out(0x3C0, 0x01)
    g.out(0x3C0, 0x20)
    assert g.render()[100, 0] == text_colour(1)


@pytest.fixture
def vbe():
    return Guest()


def test_vbe_32bpp_pixels_written_to_vram_appear(vbe):
    vbe.vbe(1024, 768, 32)
    vram = np.frombuffer(vbe.vga.vram, dtype=np.uint32)
    vram[5 * 1024 + 7] = 0x00112233
    vram[767 * 1024 + 1023] = 0x00FFFFFF
    frame = vbe.renderer.render()
    assert frame.shape == (768, 1024, 4)
    assert tuple(frame[5, 7]) == (0x33, 0x22, 0x11, 0)
    assert frame.view(np.uint32)[767, 1023, 0] == 0xFFFFFF
    assert frame.view(np.uint32).sum() == 0x112233 + 0xFFFFFF


def test_vbe_virtual_width_and_offsets(vbe):
    vbe.vbe(640, 480, 32)
    vbe.dispi(dispi.VIRT_WIDTH, 1024)
    vbe.dispi(dispi.X_OFFSET, 8)
    vbe.dispi(dispi.Y_OFFSET, 2)
    vram = np.frombuffer(vbe.vga.vram, dtype=np.uint32)
    vram[2 * 1024 + 8] = 0xABCDEF
    vram[(2 + 479) * 1024 + 8 + 639] = 0x123456
    frame = vbe.render()
    assert frame.shape == (480, 640)
    assert frame[0, 0] == 0xABCDEF and frame[479, 639] == 0x123456


def test_vbe_16_15_24_bpp_conversions(vbe):
    vbe.vbe(64, 8, 16)
    px = np.frombuffer(vbe.vga.vram, dtype=np.uint16)
    px[0], px[1], px[2] = 0xF800, 0x07E0, 0x001F
    px[3] = (16 << 11) | (32 << 5) | 8
    frame = vbe.render()
    assert list(frame[0, :4]) == [0xFF0000, 0x00FF00, 0x0000FF, (0x84 << 16) | (0x82 << 8) | 0x42]
    vbe.vbe(64, 8, 15)
    px[0], px[1] = 0x7C00, 0x83E0                   # bit 15 is ignored
    frame = vbe.render()
    assert list(frame[0, :2]) == [0xFF0000, 0x00FF00]
    vbe.vbe(64, 8, 24)
    raw = np.frombuffer(vbe.vga.vram, dtype=np.uint8)
    raw[0:6] = [0x10, 0x20, 0x30, 0xAA, 0xBB, 0xCC]
    raw[64 * 3 * 7 + 63 * 3: 64 * 3 * 7 + 64 * 3] = [1, 2, 3]
    frame = vbe.render()
    assert list(frame[0, :2]) == [0x302010, 0xCCBBAA] and frame[7, 63] == 0x030201


def test_vbe_8bpp_goes_through_the_dac(vbe):
    vbe.vbe(320, 200, 8)
    vbe.dac(0x10, (63, 32, 0))
    np.frombuffer(vbe.vga.vram, dtype=np.uint8)[321] = 0x10
    assert vbe.render()[1, 1] == bgrx(63, 32, 0)
    vbe.vbe(320, 200, 8, dispi.DAC_8BIT | dispi.NOCLEARMEM)
    vbe.dac(0x10, (0x80, 0x40, 0x20))
    assert vbe.render()[1, 1] == 0x804020
    vbe.out(0x3C6, 0x0F)                            # PEL mask: 0x10 now looks up entry 0
    assert vbe.render()[1, 1] == 0


def test_render_into_a_given_buffer(vbe):
    vbe.vbe(800, 600, 32)
    np.frombuffer(vbe.vga.vram, dtype=np.uint32)[0] = 0x445566
    buffer = bytearray(2560 * 1600 * 4)
    frame = vbe.renderer.render(buffer)
    assert frame.shape == (600, 800, 4)
    assert buffer[:4] == b"\x66\x55\x44\x00"
    with pytest.raises(ValueError, match="needs"):
        vbe.renderer.render(bytearray(16))


def best_ms(fn, runs=20):
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def test_render_speed(vbe, text):
    vbe.vbe(1024, 768, 32)
    rng = np.random.default_rng(1)
    np.frombuffer(vbe.vga.vram, dtype=np.uint8)[:1024 * 768 * 4] = rng.integers(0, 256, 1024 * 768 * 4)
    out = np.zeros((768, 1024, 4), dtype=np.uint8)
    vbe_ms = best_ms(lambda: vbe.renderer.render(out))
    for r in range(25):
        text.put(r, 0, "H/" * 40, 0x1E)
    text_out = np.zeros((400, 720, 4), dtype=np.uint8)
    text_ms = best_ms(lambda: text.renderer.render(text_out))
    print(f"1024x768x32: {vbe_ms:.2f} ms, 80x25 text: {text_ms:.2f} ms")
    # Generous bounds: this guards against a per-pixel Python loop creeping in, not machine noise.
    assert vbe_ms < 30 and text_ms < 30
