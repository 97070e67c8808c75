"""Oracle tests for the VRDP bitmap codecs: tiles encoded by ours must decode pixel-exact with
FreeRDP's own decoders (libfreerdp2 through ctypes) and with our small decoders."""

from __future__ import annotations

import ctypes
import ctypes.util
import struct

import numpy as np
import pytest

from services.vrdp.codecs import convert, planar, rle

# FreeRDP pixel format codes: (bpp << 24) | (type << 16) | (a << 12) | (r << 8) | (g << 4) | b.
PIXEL_FORMAT_BGRX32 = 32 << 24 | 4 << 16 | 0 << 12 | 8 << 8 | 8 << 4 | 8
PIXEL_FORMAT_XRGB32 = 32 << 24 | 1 << 16 | 0 << 12 | 8 << 8 | 8 << 4 | 8


class GdiPalette(ctypes.Structure):
    _fields_ = [("format", ctypes.c_uint32), ("palette", ctypes.c_uint32 * 256)]


class FreeRDP:
    """The decoders of Debian's libfreerdp2 2.11 (include/freerdp/codec/{planar,interleaved}.h)."""

    def __init__(self) -> None:
        lib = ctypes.CDLL("libfreerdp2.so.2")
        u32, ptr = ctypes.c_uint32, ctypes.c_void_p
        lib.bitmap_interleaved_context_new.restype = ptr
        lib.bitmap_interleaved_context_new.argtypes = [ctypes.c_int]
        lib.bitmap_interleaved_context_free.argtypes = [ptr]
        lib.interleaved_decompress.restype = ctypes.c_int
        lib.interleaved_decompress.argtypes = [ptr, ctypes.c_char_p, u32, u32, u32, u32, ptr, u32,
                                               u32, u32, u32, u32, u32, ptr]
        lib.freerdp_bitmap_planar_context_new.restype = ptr
        lib.freerdp_bitmap_planar_context_new.argtypes = [u32, u32, u32]
        lib.freerdp_bitmap_planar_context_free.argtypes = [ptr]
        lib.freerdp_bitmap_planar_context_reset.restype = ctypes.c_int
        lib.freerdp_bitmap_planar_context_reset.argtypes = [ptr, u32, u32]
        lib.planar_decompress.restype = ctypes.c_int
        lib.planar_decompress.argtypes = [ptr, ctypes.c_char_p, u32, u32, u32, ptr, u32, u32, u32,
                                          u32, u32, u32, ctypes.c_int]
        self.lib = lib
        self.interleaved = lib.bitmap_interleaved_context_new(0)
        self.planar = lib.freerdp_bitmap_planar_context_new(0, 64, 64)
        self.palette = GdiPalette()
        self.palette.format = PIXEL_FORMAT_XRGB32
        for index, (r, g, b) in enumerate(convert.PALETTE.tolist()):
            self.palette.palette[index] = r << 16 | g << 8 | b

    def close(self) -> None:
        self.lib.bitmap_interleaved_context_free(self.interleaved)
        self.lib.freerdp_bitmap_planar_context_free(self.planar)

    def interleaved_decompress(self, data: bytes, width: int, height: int, bpp: int) -> np.ndarray:
        out = np.zeros((height, width, 4), np.uint8)
        ok = self.lib.interleaved_decompress(self.interleaved, data, len(data), width, height, bpp,
                                             out.ctypes.data, PIXEL_FORMAT_BGRX32, width * 4, 0, 0,
                                             width, height, ctypes.addressof(self.palette))
        assert ok, f"FreeRDP rejected our {bpp} bpp interleaved RLE for {width}x{height}"
        return out

    def planar_decompress(self, data: bytes, width: int, height: int) -> np.ndarray:
        out = np.zeros((height, width, 4), np.uint8)
        # FreeRDP's clients size the planar context to the desktop (freerdp_client_codecs_reset);
        # since 2.11.7 the decoder refuses a bitmap larger than its context.
        assert self.lib.freerdp_bitmap_planar_context_reset(self.planar, max(width, 64), max(height, 64))
        # vFlip as gdi_Bitmap_Decompress passes it for legacy (bottom-up) bitmap updates.
        ok = self.lib.planar_decompress(self.planar, data, len(data), width, height,
                                        out.ctypes.data, PIXEL_FORMAT_BGRX32, width * 4, 0, 0,
                                        width, height, 1)
        assert ok, f"FreeRDP rejected our planar stream for {width}x{height}"
        return out


@pytest.fixture(scope="module")
def freerdp():
    if ctypes.util.find_library("freerdp2") is None:
        pytest.fail("libfreerdp2 is missing (apt-get install libfreerdp2-2, or scripts/setup): "
                    "FreeRDP's decoders are the oracle for the VRDP codecs")
    oracle = FreeRDP()
    yield oracle
    oracle.close()


def _text_like(rng, height, width):
    # Dark glyph strokes on a light window with a coloured title bar: long background runs
    # with short irregular pixel stretches, like a terminal or a dialog.
    tile = np.full((height, width, 4), (0xF0, 0xF0, 0xF0, 0), np.uint8)
    tile[: max(1, height // 8)] = (0xA0, 0x50, 0x20, 0)
    for y in range(height // 8 + 1, height, 9):
        glyphs = rng.random((min(6, height - y), width)) < 0.35
        tile[y:y + glyphs.shape[0]][glyphs] = (0x10, 0x10, 0x10, 0)
    return tile


def _tiles():
    rng = np.random.default_rng(20240607)
    for height, width in ((64, 64), (13, 7), (7, 13), (1, 1), (1, 64), (64, 1), (33, 100)):
        yield "solid", np.full((height, width, 4), (0x33, 0x66, 0x99, 0), np.uint8)
        yield "black", np.zeros((height, width, 4), np.uint8)
        x = np.linspace(0, 255, width).astype(np.uint8)[None, :]
        y = np.linspace(0, 255, height).astype(np.uint8)[:, None]
        gradient = np.zeros((height, width, 4), np.uint8)
        gradient[..., 0] = x
        gradient[..., 1] = y
        gradient[..., 2] = (x // 2 + y // 2)
        yield "gradient", gradient
        yield "text", _text_like(rng, height, width)
        yield "noise", rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        stripes = np.zeros((height, width, 4), np.uint8)
        stripes[::2] = 0xFF
        yield "stripes", stripes
        few = np.array([[0, 0, 0, 0], [255, 255, 255, 0], [0, 0, 255, 0]], np.uint8)
        yield "few-colours", few[rng.integers(0, 3, (height, width))]


TILES = list(_tiles())
IDS = [f"{name}-{tile.shape[1]}x{tile.shape[0]}" for name, tile in TILES]


def _freerdp_view(bgrx: np.ndarray, bpp: int) -> np.ndarray:
    """What FreeRDP 2.11 shows for `bgrx` sent at `bpp`: its own expansion of 5- and 6-bit
    channels (green at 16 bpp is (c << 2) + c / 8, slightly off the usual bit replication)."""
    values = convert.pixel_values(bgrx, bpp).astype(np.uint32)
    if bpp not in (15, 16):
        return convert.quantise(bgrx, bpp)[..., :3]
    red_shift, green_bits = (11, 6) if bpp == 16 else (10, 5)
    r = (values >> red_shift) & 0x1F
    g = (values >> 5) & ((1 << green_bits) - 1)
    b = values & 0x1F
    five = lambda c: np.minimum((c << 3) + c // 4, 255)
    green = np.minimum((g << 2) + g // 8, 255) if bpp == 16 else five(g)
    return np.stack([five(b), green, five(r)], -1).astype(np.uint8)


@pytest.mark.parametrize("bpp", [8, 15, 16, 24])
@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("name,tile", TILES, ids=IDS)
def test_interleaved_round_trip(freerdp, name, tile, bpp, header):
    height, width = tile.shape[:2]
    payload = rle.compress(tile, bpp, header=header)
    body = payload
    if header:
        first_row, body_size, scan_width, uncompressed = struct.unpack_from("<HHHH", payload)
        pel = convert.BYTES_PER_PIXEL[bpp]
        assert (first_row, body_size) == (0, len(payload) - 8)
        assert (scan_width, uncompressed) == (width * pel, width * pel * height)
        body = payload[8:]
    # The caller strips TS_CD_HEADER before interleaved_decompress (gdi_Bitmap_Decompress).
    theirs = freerdp.interleaved_decompress(body, width, height, bpp)
    np.testing.assert_array_equal(theirs[..., :3], _freerdp_view(tile, bpp))
    ours = rle.decompress(payload, width, height, bpp, header=header)
    np.testing.assert_array_equal(ours[..., :3], convert.quantise(tile, bpp)[..., :3])
    if bpp in (15, 16, 24):
        step = 0 if bpp == 24 else 8
        error = np.abs(theirs[..., :3].astype(int) - tile[..., :3])
        assert error.max() <= step


@pytest.mark.parametrize("allow_raw", [False, True])
@pytest.mark.parametrize("name,tile", TILES, ids=IDS)
def test_planar_round_trip(freerdp, name, tile, allow_raw):
    height, width = tile.shape[:2]
    stream = planar.compress(tile, allow_raw=allow_raw)
    if not allow_raw:
        assert stream[0] == 0x10          # the only FormatHeader rdesktop decodes
    theirs = freerdp.planar_decompress(stream, width, height)
    np.testing.assert_array_equal(theirs[..., :3], tile[..., :3])
    ours = planar.decompress(stream, width, height)
    np.testing.assert_array_equal(ours[..., :3], tile[..., :3])
    assert (ours[..., 3] == 0xFF).all()


def test_planar_raw_only_when_rle_does_not_help():
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    assert planar.compress(noise)[0] == planar.RAW_FORMAT
    assert len(planar.compress(noise)) == 1 + 3 * 64 * 64 + 1
    flat = np.full((64, 64, 4), 0x80, np.uint8)
    assert planar.compress(flat)[0] == planar.RLE_FORMAT
    assert len(planar.compress(flat)) < 1024


@pytest.mark.parametrize("height,width", [(64, 64), (1, 4), (17, 36)])
def test_planar_one_colour_tile_takes_the_cached_path_with_the_same_bytes(freerdp, height, width):
    tile = np.empty((height, width, 4), np.uint8)
    tile[...] = (0x12, 0x34, 0x56, 0x9A)                    # the X byte differs from alpha: ignored
    for bottom_up in (True, False):
        for allow_raw in (True, False):
            stream = planar.compress(tile, bottom_up=bottom_up, allow_raw=allow_raw)
            assert stream == planar._compress(tile, bottom_up, allow_raw)
    theirs = freerdp.planar_decompress(planar.compress(tile, allow_raw=False), width, height)
    np.testing.assert_array_equal(theirs[..., :3], tile[..., :3])
    tile[0, 0, 0] = 0x13                                    # one pixel off: the general encoder
    np.testing.assert_array_equal(planar.decompress(planar.compress(tile), width, height)[..., :3],
                                  tile[..., :3])


def test_planar_top_down_for_gfx(freerdp):
    tile = _text_like(np.random.default_rng(9), 20, 30)
    stream = planar.compress(tile, bottom_up=False, allow_raw=False)
    np.testing.assert_array_equal(planar.decompress(stream, 30, 20, bottom_up=False)[..., :3],
                                  tile[..., :3])
    np.testing.assert_array_equal(planar.decompress(stream, 30, 20)[..., :3], tile[::-1, :, :3])


def test_rle_compresses_flat_and_text_tiles():
    flat = np.full((64, 64, 4), 0x40, np.uint8)
    assert len(rle.compress(flat, 16)) < 16
    text = _text_like(np.random.default_rng(3), 64, 64)
    assert len(rle.compress(text, 16)) < 64 * 64 * 2 // 2


def test_rle_never_emits_two_background_runs_in_a_row():
    # The decoder XORs the foreground colour into the first pixel of a second consecutive
    # background run; a run longer than the 16-bit order length must continue another way.
    tile = np.zeros((1100, 64, 4), np.uint8)
    payload = rle.compress(tile, 16)
    np.testing.assert_array_equal(rle.decompress(payload, 64, 1100, 16)[..., :3], 0)


def test_rle_decoder_reads_orders_we_do_not_emit(freerdp):
    # FG run (XOR with the row below), SET_FG fg run, FGBG image, dithered run, white, black.
    width = 8
    fg = struct.pack("<H", 0x001F)
    payload = (bytes([0x60 | 8]) + struct.pack("<H", 0x1234)       # colour run on row 0
               + bytes([0xC0 | 2]) + fg                            # set fg 0x001F, fg run x2
               + bytes([0x20 | 2])                                 # fg run x2
               + bytes([0x40 | 1, 0b00000101])                     # FGBG image, 8 pixels
               + bytes([0xE0 | 1]) + struct.pack("<HH", 1, 2)      # dithered run: 1, 2
               + bytes([0xFD, 0xFE]))
    values = rle.decompress_values(payload, width, 3, 16)[::-1]
    assert values[0].tolist() == [0x1234] * 8
    lit = 0x1234 ^ 0x1F
    assert values[1].tolist() == [lit] * 4 + [lit, 0x1234, lit, 0x1234]
    assert values[2].tolist() == [lit] * 4 + [1, 2, 0xFFFF, 0]
    theirs = freerdp.interleaved_decompress(payload, width, 3, 16)
    ours = convert.values_to_bgrx(rle.decompress_values(payload, width, 3, 16), 16)
    np.testing.assert_array_equal(theirs[..., :3], _freerdp_view(ours, 16))


def test_palette_update_data():
    data = convert.palette_update_data()
    assert struct.unpack_from("<HHI", data) == (2, 0, 256)
    assert len(data) == 8 + 256 * 3
    assert data[8:11] == b"\0\0\0" and data[-3:] == bytes(convert.PALETTE[255])


def test_raw_bitmap_rows_bottom_up():
    tile = np.zeros((2, 2, 4), np.uint8)
    tile[0] = (1, 2, 3, 4)
    tile[1] = (5, 6, 7, 8)
    assert convert.raw_bitmap(tile, 24) == bytes([5, 6, 7] * 2 + [1, 2, 3] * 2)
    assert convert.raw_bitmap(tile, 32) == bytes([5, 6, 7, 8] * 2 + [1, 2, 3, 4] * 2)
    white = np.full((1, 1, 4), 0xFF, np.uint8)
    assert convert.raw_bitmap(white, 16) == b"\xff\xff"
    assert convert.raw_bitmap(white, 15) == b"\xff\x7f"


def test_rle_decoder_inserts_foreground_between_background_runs(freerdp):
    # Two background runs in a row: the second starts with the pixel below XOR the foreground
    # (white until set), on the first row and above it; our decoder must agree with FreeRDP.
    payload = (bytes([0x02, 0x02, 0x60 | 4]) + struct.pack("<H", 0x0841)
               + bytes([0x03, 0x01]))
    ours = rle.decompress_values(payload, 4, 3, 16)[::-1]
    assert ours[0].tolist() == [0, 0, 0xFFFF, 0]
    assert ours[1].tolist() == [0x0841] * 4
    assert ours[2].tolist() == [0x0841] * 3 + [0x0841 ^ 0xFFFF]
    theirs = freerdp.interleaved_decompress(payload, 4, 3, 16)
    expected = _freerdp_view(convert.values_to_bgrx(ours[::-1], 16), 16)
    np.testing.assert_array_equal(theirs[..., :3], expected)
