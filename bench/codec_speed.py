"""Speed of the VRDP bitmap codecs: milliseconds per 64x64 tile and per 1024x768 frame, and the
bytes they produce, for interleaved RLE at 8-24 bpp and planar at 32 bpp."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.vrdp.codecs import convert, planar, rle  # noqa: E402

TILE = 64


def desktop(width: int, height: int) -> np.ndarray:
    """A synthetic desktop: flat background, a gradient wallpaper strip, windows with text-like
    glyph rows and a photo-like noisy area, so every kind of tile appears."""
    rng = np.random.default_rng(1)
    frame = np.zeros((height, width, 4), np.uint8)
    frame[...] = (0x80, 0x60, 0x30, 0)
    frame[: height // 4, :, 0] = np.linspace(0, 255, width).astype(np.uint8)
    window = frame[height // 4:, : width // 2]
    window[...] = (0xF0, 0xF0, 0xF0, 0)
    for y in range(8, window.shape[0] - 8, 14):
        glyphs = rng.random((8, window.shape[1])) < 0.3
        window[y:y + 8][glyphs] = (0x10, 0x10, 0x10, 0)
    photo = (height - height // 2, width // 4, 4)
    frame[height // 2:, 3 * width // 4:] = rng.integers(0, 256, photo, dtype=np.uint8)
    return frame


def tiles_of(frame: np.ndarray):
    for y in range(0, frame.shape[0], TILE):
        for x in range(0, frame.shape[1], TILE):
            yield frame[y:y + TILE, x:x + TILE]


def timed(encode, tiles, repeat: int = 3) -> tuple[float, int]:
    best = float("inf")
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        size = sum(len(encode(tile)) for tile in tiles)
        best = min(best, time.perf_counter() - start)
    return best * 1000, size


def main() -> None:
    rng = np.random.default_rng(2)
    samples = {
        "flat": np.full((TILE, TILE, 4), 0x55, np.uint8),
        "text": desktop(1024, 768)[256:320, 0:64].copy(),
        "noise": rng.integers(0, 256, (TILE, TILE, 4), dtype=np.uint8),
    }
    encoders = {f"rle{bpp}": (lambda t, b=bpp: rle.compress(t, b)) for bpp in (8, 15, 16, 24)}
    encoders["planar32"] = lambda t: planar.compress(t, allow_raw=False)
    encoders["planar32+raw"] = planar.compress
    encoders["raw16"] = lambda t: convert.raw_bitmap(t, 16)
    encoders["raw32"] = lambda t: convert.raw_bitmap(t, 32)

    print("per 64x64 tile: ms (bytes)")
    print(f"{'codec':14}" + "".join(f"{name:>20}" for name in samples))
    for codec, encode in encoders.items():
        cells = []
        for tile in samples.values():
            ms, size = timed(encode, [tile] * 20)
            cells.append(f"{ms / 20:8.3f} ({size // 20:6d})")
        print(f"{codec:14}" + "".join(f"{cell:>20}" for cell in cells))

    frame = desktop(1024, 768)
    tiles = list(tiles_of(frame))
    print(f"\nper 1024x768 frame ({len(tiles)} tiles of a synthetic desktop): ms, bytes "
          f"(raw 32 bpp is {1024 * 768 * 4} bytes)")
    for codec, encode in encoders.items():
        ms, size = timed(encode, tiles, repeat=2)
        print(f"{codec:14}{ms:10.1f} ms {size:10d} bytes")


if __name__ == "__main__":
    main()
