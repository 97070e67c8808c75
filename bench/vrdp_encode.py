"""Encoding a full 1024x768 screen change as the VRDP server does (64x64 tiles): our planar (32 bpp) and
interleaved RLE (16 bpp) against FreeRDP's own encoders in Debian's libfreerdp2, called through ctypes.

Prints milliseconds per frame, bytes per frame and the ratios; the frame is codec_speed.py's synthetic desktop."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import machine
from bench.codec_speed import desktop
from services.vrdp.codecs import planar, rle

TILE = 64
WIDTH, HEIGHT = 1024, 768
# FreeRDP 2 (include/freerdp/codec/planar.h, color.h)
PLANAR_FORMAT_HEADER_RLE = 1 << 4
PLANAR_FORMAT_HEADER_NA = 1 << 5
FREERDP_PIXEL_FORMAT_TYPE_BGRA = 4


def pixel_format(bpp: int, kind: int, a: int, r: int, g: int, b: int) -> int:
    return (bpp << 24) | (kind << 16) | (a << 12) | (r << 8) | (g << 4) | b


PIXEL_FORMAT_BGRX32 = pixel_format(32, FREERDP_PIXEL_FORMAT_TYPE_BGRA, 0, 8, 8, 8)


def load_freerdp():
    name = ctypes.util.find_library("freerdp2") or "libfreerdp2.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        sys.exit(f"bench: FreeRDP's library is missing ({exc}); install libfreerdp2-2 (Debian)")
    lib.freerdp_bitmap_planar_context_new.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32]
    lib.freerdp_bitmap_planar_context_new.restype = ctypes.c_void_p
    lib.freerdp_bitmap_planar_context_free.argtypes = [ctypes.c_void_p]
    lib.freerdp_bitmap_compress_planar.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    lib.freerdp_bitmap_compress_planar.restype = ctypes.c_void_p
    lib.bitmap_interleaved_context_new.argtypes = [ctypes.c_int]
    lib.bitmap_interleaved_context_new.restype = ctypes.c_void_p
    lib.bitmap_interleaved_context_free.argtypes = [ctypes.c_void_p]
    lib.interleaved_compress.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint32, ctypes.c_uint32,
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p,
        ctypes.c_uint32]
    lib.interleaved_compress.restype = ctypes.c_int
    return lib


def tiles(frame: np.ndarray):
    for y in range(0, frame.shape[0], TILE):
        for x in range(0, frame.shape[1], TILE):
            yield np.ascontiguousarray(frame[y:y + TILE, x:x + TILE])


def freerdp_planar(lib):
    context = lib.freerdp_bitmap_planar_context_new(PLANAR_FORMAT_HEADER_NA | PLANAR_FORMAT_HEADER_RLE,
                                                   TILE, TILE)
    out = ctypes.create_string_buffer(TILE * TILE * 4 + 1024)

    def encode(tile: np.ndarray) -> int:
        size = ctypes.c_uint32(len(out))
        height, width = tile.shape[:2]
        result = lib.freerdp_bitmap_compress_planar(context, tile.ctypes.data, PIXEL_FORMAT_BGRX32, width, height,
                                                    width * 4, out, ctypes.byref(size))
        if not result:
            raise RuntimeError("freerdp_bitmap_compress_planar failed")
        return size.value
    return encode, lambda: lib.freerdp_bitmap_planar_context_free(context)


def freerdp_interleaved(lib, bpp: int):
    context = lib.bitmap_interleaved_context_new(1)
    out = ctypes.create_string_buffer(TILE * TILE * 4 + 1024)

    def encode(tile: np.ndarray) -> int:
        size = ctypes.c_uint32(len(out))
        height, width = tile.shape[:2]
        if not lib.interleaved_compress(context, out, ctypes.byref(size), width, height, tile.ctypes.data,
                                        PIXEL_FORMAT_BGRX32, width * 4, 0, 0, None, bpp):
            raise RuntimeError("interleaved_compress failed")
        return size.value
    return encode, lambda: lib.bitmap_interleaved_context_free(context)


def measure(encode, frame_tiles, repeat: int) -> tuple[float, int]:
    best = float("inf")
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        size = sum(encode(tile) for tile in frame_tiles)
        best = min(best, time.perf_counter() - started)
    return best * 1000, size


def main() -> None:
    lib = load_freerdp()
    frame = desktop(WIDTH, HEIGHT)
    frame_tiles = list(tiles(frame))
    print(f"vrdp_encode: a full {WIDTH}x{HEIGHT} change in {len(frame_tiles)} tiles of {TILE}x{TILE}; {machine()}")
    print(f"{'':28}{'ours ms':>9}{'FreeRDP ms':>12}{'ratio':>8}{'ours bytes':>12}{'FreeRDP bytes':>15}{'ratio':>8}")
    rows = []
    peer, free = freerdp_planar(lib)
    rows.append(("32 bpp planar (RLE, no alpha)",
                 lambda t: len(planar.compress(t, bottom_up=True, allow_raw=False)), peer))
    peer16, free16 = freerdp_interleaved(lib, 16)
    rows.append(("16 bpp interleaved RLE", lambda t: len(rle.compress(t, 16, header=False)), peer16))
    for name, ours, theirs in rows:
        our_ms, our_bytes = measure(ours, frame_tiles, 3)
        their_ms, their_bytes = measure(theirs, frame_tiles, 5)
        print(f"{name:28}{our_ms:9.1f}{their_ms:12.2f}{our_ms / their_ms:8.1f}"
              f"{our_bytes:12d}{their_bytes:15d}{our_bytes / their_bytes:8.2f}")
    free()
    free16()


if __name__ == "__main__":
    main()
