"""Keeps the display surface (services/ipc/surface.py: the shared frame other processes read) up to
date: renders the VGA's memory and diffs tiles into damage rectangles."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from services.hw.display.render import Renderer
from services.ipc.surface import FRAME_BYTES, FRAME_OFFSET, REGION_SIZE, write_header

TILE = 64


@dataclass
class Update:
    """What one refresh() found. `rects` are (x, y, width, height) in surface pixels; after a mode
    change it is the whole new surface."""

    width: int
    height: int
    bpp: int
    sequence: int
    mode_changed: bool = False
    rects: list[tuple[int, int, int, int]] = field(default_factory=list)


def damaged_tiles(old: np.ndarray, new: np.ndarray, tile: int = TILE) -> list[tuple[int, int, int, int]]:
    """Rectangles covering the tiles where two equally sized (h, w, 4) frames differ; runs of
    tiles in a row become one rectangle, and equal runs on consecutive tile rows are stacked."""
    h, w = new.shape[:2]
    changed = old.view(np.uint32).reshape(h, w) != new.view(np.uint32).reshape(h, w)
    rows = np.logical_or.reduceat(changed, np.arange(0, h, tile), axis=0)
    tiles = np.logical_or.reduceat(rows, np.arange(0, w, tile), axis=1)
    rects: list[tuple[int, int, int, int]] = []
    open_runs: dict[tuple[int, int], int] = {}       # (first tile x, last tile x) -> index in rects
    for ty in range(tiles.shape[0]):
        line = tiles[ty]
        if not line.any():
            open_runs = {}
            continue
        padded = np.concatenate(([False], line, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        runs = {}
        y = ty * tile
        height = min(tile, h - y)
        for first, end in zip(edges[::2], edges[1::2]):
            key = (int(first), int(end))
            if key in open_runs:
                i = open_runs[key]
                x0, y0, rw, rh = rects[i]
                rects[i] = (x0, y0, rw, rh + height)
                runs[key] = i
            else:
                x = key[0] * tile
                runs[key] = len(rects)
                rects.append((x, y, min(key[1] * tile, w) - x, height))
        open_runs = runs
    return rects


class DisplaySurface:
    """Owns the front buffer in `region` (a SharedRegion/PrivateRegion of at least REGION_SIZE bytes)
    and a private back buffer. No sockets: a loop calls refresh() ~30 times a second and publishes
    the Update on the display channel; readers map the region and use read_header()/frame_view()."""

    def __init__(self, vga, region, *, tile: int = TILE, clock=time.monotonic):
        if region.size < REGION_SIZE:
            raise ValueError(f"the surface region holds {region.size} bytes, it needs {REGION_SIZE}")
        self.vga = vga
        self.region = region
        self.renderer = Renderer(vga)
        self.tile = tile
        self.clock = clock
        self.sequence = 0
        self.geometry: tuple[int, int, int] | None = None
        self._back: np.ndarray | None = None
        self._pixels = np.frombuffer(region.buf, dtype=np.uint8, count=FRAME_BYTES, offset=FRAME_OFFSET)
        self._write_header(0, 0, 0)

    @property
    def frame(self) -> np.ndarray:
        """The published frame, (height, width, 4) over the shared memory."""
        if self.geometry is None:
            return np.zeros((0, 0, 4), dtype=np.uint8)
        width, height, _ = self.geometry
        return self._pixels[:width * height * 4].reshape(height, width, 4)

    def _write_header(self, width: int, height: int, bpp: int) -> None:
        write_header(self.region, self.sequence, width, height, bpp)

    def refresh(self, now: float | None = None) -> Update:
        """Render, publish what changed, and say what it was."""
        mode = self.vga.mode()
        width, height, bpp = mode.geometry
        now = self.clock() if now is None else now
        if self.geometry != (width, height, bpp):
            self._back = np.zeros((height, width, 4), dtype=np.uint8)
            self.renderer.render(self._back, now=now, mode=mode)
            self.geometry = (width, height, bpp)
            self.sequence += 1
            self.frame[:] = self._back
            self._write_header(width, height, bpp)
            return Update(width, height, bpp, self.sequence, True, [(0, 0, width, height)])
        back = self.renderer.render(self._back, now=now, mode=mode)
        front = self.frame
        rects = damaged_tiles(front, back, self.tile)
        if rects:
            for x, y, w, h in rects:
                front[y:y + h, x:x + w] = back[y:y + h, x:x + w]
            self.sequence += 1
            self._write_header(width, height, bpp)
        return Update(width, height, bpp, self.sequence, False, rects)

    def screenshot_png(self, dest) -> None:
        """Write the published frame as a PNG to `dest` (a path or a binary file object)."""
        from PIL import Image
        frame = self.frame
        height, width = frame.shape[:2]
        if not width or not height:
            raise ValueError("the display surface has no frame yet")
        image = Image.frombuffer("RGB", (width, height), np.ascontiguousarray(frame).tobytes(),
                                 "raw", "BGRX", 0, 1)
        image.save(dest, format="PNG")
