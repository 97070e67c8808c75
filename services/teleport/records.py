"""What the teleport stream carries, one msgpack record per block: the configuration to check,
memory pages (data or zero runs) of each shared area (RAM, video RAM), processor and device state."""

from __future__ import annotations

import msgpack
import numpy as np

PAGE = 4096
PAGE_WORDS = PAGE // 8
MAX_DATA_PAGES = 256              # 1 MiB of page data per record

CONFIG, DATA, ZERO, ROUND, CPU, DEVICES = "config", "data", "zero", "round", "cpu", "devices"
RESUME = "resume"       # [RESUME, bool]: the target runs the VM as soon as it holds the media


def pack(*record) -> bytes:
    return msgpack.packb(list(record), use_bin_type=True)


def unpack(block: bytes) -> list:
    try:
        record = msgpack.unpackb(block, raw=False, strict_map_key=False)
    except (ValueError, TypeError) as error:      # msgpack's errors are ValueErrors
        raise ValueError(f"unreadable stream record: {error}") from None
    if not isinstance(record, list) or not record or not isinstance(record[0], str):
        raise ValueError("stream record is not a tagged list")
    return record


def runs(indices: np.ndarray):
    """(first, count) for each run of consecutive page indices (sorted, unique)."""
    if len(indices) == 0:
        return
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(indices)]))
    for s, e in zip(starts.tolist(), ends.tolist()):
        yield int(indices[s]), e - s


def page_records(area: int, pages: np.ndarray, dirty: np.ndarray):
    """Records for the given dirty pages of one area, read from `pages` (a (n, 512) uint64 view):
    zero pages as runs without data, the others as data runs of at most MAX_DATA_PAGES."""
    for at in range(0, len(dirty), CHUNK_PAGES):   # bounds the temporary copy to 32 MiB
        yield from _chunk_records(area, pages, dirty[at:at + CHUNK_PAGES])


CHUNK_PAGES = 8192


def _chunk_records(area: int, pages: np.ndarray, dirty: np.ndarray):
    nonzero = pages[dirty].any(axis=1)
    for first, count in runs(dirty[~nonzero]):
        yield pack(ZERO, area, first, count), 0
    for first, count in runs(dirty[nonzero]):
        for start in range(first, first + count, MAX_DATA_PAGES):
            n = min(MAX_DATA_PAGES, first + count - start)
            data = pages[start:start + n].tobytes()
            yield pack(DATA, area, start, data), len(data)
