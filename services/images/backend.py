"""What a disk controller needs from a disk image: sector reads and writes, size, flush, and one
kind of error that carries a line the user can act on."""

from __future__ import annotations

from typing import Protocol


class ImageError(Exception):
    """A disk image that cannot be used: missing, corrupt, in use, wrong format. The message is one
    line in VBoxManage's style, naming the file and the problem."""


class BlockBackend(Protocol):
    """A disk or CD/DVD image as the IDE model sees it.

    Offsets and lengths are in bytes and multiples of `sector_size`; reads past the end raise
    ImageError. Writes reach the file in the order they are made (guest order)."""

    path: str
    size: int             # bytes
    sector_size: int      # 512 for disks, 2048 for CD/DVD images
    readonly: bool

    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
