"""RDP 6.0 planar codec for 32 bpp legacy bitmaps (MS-RDPEGDI 2.2.2.5.1, 3.1.9): the encoder writes
FormatHeader 0x10 (RLE, alpha plane) or raw planes as a fallback, and the decoder reads both."""

from __future__ import annotations

import functools

import numpy as np

FORMAT_CLL_MASK = 0x07
FORMAT_CS = 0x08
FORMAT_RLE = 0x10
FORMAT_NA = 0x20

# rdesktop decodes nothing but 0x10, so RLE with an alpha plane is the default; the raw form omits
# the alpha plane (NA) because it costs width x height bytes there instead of a few.
RLE_FORMAT = FORMAT_RLE
RAW_FORMAT = FORMAT_NA

# A run must cover at least this many repeats after its first (raw) byte to pay for a control byte.
MIN_RUN = 3


def _planes(bgrx: np.ndarray, bottom_up: bool) -> np.ndarray:
    """The (4, h, w) planes A, R, G, B. Alpha is always opaque: the surface's X byte means
    nothing, and a client that honours alpha would otherwise draw a transparent desktop."""
    image = bgrx[::-1] if bottom_up else bgrx
    planes = np.empty((4,) + image.shape[:2], np.uint8)
    planes[0] = 0xFF
    planes[1] = image[..., 2]
    planes[2] = image[..., 1]
    planes[3] = image[..., 0]
    return planes


def _delta(planes: np.ndarray) -> np.ndarray:
    """Rows after the first become the difference to the row before, as a wrapped int8 with the
    sign moved to bit 0 (2d for d >= 0, -2d - 1 below), so small changes either way are small."""
    out = planes.copy()
    diff = (planes[:, 1:].astype(np.int16) - planes[:, :-1]).astype(np.uint8).view(np.int8)
    diff = diff.astype(np.int16)
    out[:, 1:] = np.where(diff >= 0, diff * 2, -diff * 2 - 1).astype(np.uint8)
    return out


def _segments(out: bytearray, raw: bytes, repeat: int) -> None:
    """Control bytes for `raw` literal bytes followed by `repeat` copies of the last value."""
    size = len(raw)
    start = 0
    while size - start > 15:
        out.append(0xF0)
        out += raw[start:start + 15]
        start += 15
    tail = size - start
    if repeat == 0:
        if tail:
            out.append(tail << 4)
            out += raw[start:]
        return
    if tail:
        # A segment with raw bytes carries a run of 0 or 3..15; the rest must not be 1 or 2,
        # which no segment can express (nRunLength 1 and 2 mean runs of 16+ and 32+).
        first = min(repeat, 15)
        if repeat - first in (1, 2):
            first = 12
        out.append(tail << 4 | first)
        out += raw[start:]
        repeat -= first
    while repeat:
        if repeat >= 16:
            count = min(repeat, 47)
            if repeat - count in (1, 2):
                count -= 3
            out.append((count - 32) << 4 | 2 if count >= 32 else (count - 16) << 4 | 1)
        else:
            count = repeat
            out.append(count)
        repeat -= count


def _rle_rows(rows: np.ndarray) -> bytes:
    """Segment-RLE every row of a (n, w) byte array independently (each row's value starts at 0)."""
    n_rows, width = rows.shape
    flat = rows.ravel()
    starts_mask = np.ones(flat.size, bool)
    starts_mask[1:] = flat[1:] != flat[:-1]
    starts_mask[::width] = True
    starts = np.flatnonzero(starts_mask)
    lengths = np.diff(np.append(starts, flat.size))
    column = starts % width
    # A run at the start of a row repeating 0 needs no literal byte; any other run's first byte
    # goes out literally, and the run repeats it.
    free = (column == 0) & (flat[starts] == 0)
    repeat = np.where(free, lengths, lengths - 1)
    keep = repeat >= MIN_RUN
    run_row = (starts[keep] // width).tolist()
    run_column = (column[keep] + ~free[keep]).tolist()     # where the repeats begin in the row
    run_repeat = repeat[keep].tolist()

    data = flat.tobytes()
    out = bytearray()
    k = 0
    n_runs = len(run_row)
    for row in range(n_rows):
        base = row * width
        pos = 0
        while k < n_runs and run_row[k] == row:
            begin = run_column[k]
            _segments(out, data[base + pos:base + begin], run_repeat[k])
            pos = begin + run_repeat[k]
            k += 1
        if pos < width:
            _segments(out, data[base + pos:base + width], 0)
    return bytes(out)


def compress(bgrx: np.ndarray, bottom_up: bool = True, allow_raw: bool = True) -> bytes:
    """The planar bitmap stream of a (h, w, 4) B,G,R,X image; rows bottom-up for legacy bitmap
    updates, top-down for GFX. With allow_raw, raw planes replace RLE that would be no smaller
    (only for clients other than rdesktop, which decodes FormatHeader 0x10 alone)."""
    height, width = bgrx.shape[:2]
    if bgrx.flags.c_contiguous and height and width:
        colours = bgrx.view("<u4").reshape(-1) & 0xFFFFFF
        if (colours == colours[0]).all():
            # One colour (a cleared screen, a window's background): the same few bytes every
            # time, so they are encoded once per size and colour.
            return _uniform(height, width, int(colours[0]), bottom_up, allow_raw)
    return _compress(bgrx, bottom_up, allow_raw)


@functools.lru_cache(maxsize=256)
def _uniform(height: int, width: int, colour: int, bottom_up: bool, allow_raw: bool) -> bytes:
    tile = np.empty((height, width), "<u4")
    tile[:] = colour
    return _compress(tile.view(np.uint8).reshape(height, width, 4), bottom_up, allow_raw)


def _compress(bgrx: np.ndarray, bottom_up: bool, allow_raw: bool) -> bytes:
    planes = _planes(bgrx, bottom_up)
    height, width = planes.shape[1:]
    encoded = bytes((RLE_FORMAT,)) + _rle_rows(_delta(planes).reshape(4 * height, width))
    raw_size = 1 + 3 * width * height + 1
    if allow_raw and len(encoded) >= raw_size:
        return bytes((RAW_FORMAT,)) + planes[1:].tobytes() + b"\0"
    return encoded


def _decode_rle_plane(data: bytes, pos: int, width: int, height: int) -> tuple[np.ndarray, int]:
    plane = np.zeros((height, width), np.uint8)
    for y in range(height):
        row = []
        value = 0
        while len(row) < width:
            control = data[pos]
            pos += 1
            run, raw = control & 0x0F, control >> 4
            if run in (1, 2):
                run, raw = raw + 16 * run, 0
            row.extend(data[pos:pos + raw])
            if raw:
                value = data[pos + raw - 1]
            pos += raw
            row.extend([value] * run)
        if len(row) != width:
            raise ValueError("planar scanline overruns the bitmap width")
        if y == 0:
            plane[0] = row
        else:
            codes = np.array(row, np.int16)
            delta = np.where(codes & 1, -((codes >> 1) + 1), codes >> 1)
            plane[y] = (plane[y - 1] + delta).astype(np.uint8)
    return plane, pos


def decompress(data: bytes, width: int, height: int, bottom_up: bool = True) -> np.ndarray:
    """Decode a planar stream without colour loss or subsampling into (h, w, 4) B,G,R,A, top row
    first (A = 0xFF when the stream has no alpha plane)."""
    header = data[0]
    if header & (FORMAT_CLL_MASK | FORMAT_CS):
        raise ValueError("planar colour loss and chroma subsampling are not supported")
    has_alpha = not header & FORMAT_NA
    count = 4 if has_alpha else 3
    if header & FORMAT_RLE:
        pos = 1
        decoded = []
        for _ in range(count):
            plane, pos = _decode_rle_plane(data, pos, width, height)
            decoded.append(plane)
        planes = np.stack(decoded)
    else:
        size = width * height * count
        if len(data) < 1 + size:
            raise ValueError("planar raw stream is shorter than its planes")
        planes = np.frombuffer(data, np.uint8, size, 1).reshape(count, height, width)
    if not has_alpha:
        planes = np.concatenate([np.full((1, height, width), 0xFF, np.uint8), planes])
    image = np.stack([planes[3], planes[2], planes[1], planes[0]], -1)
    return image[::-1] if bottom_up else image
