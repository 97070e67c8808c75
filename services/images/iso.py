"""ISO 9660 CD/DVD images: read-only, 2048-byte sectors, checked for the "CD001" volume
descriptor so that a wrong file is refused when it is attached, not when the guest boots."""

from __future__ import annotations

import os

from .backend import ImageError
from .raw import ImageFile, file_size, open_image_file, pread_exact

SECTOR = 2048
DESCRIPTOR_OFFSET = 16 * SECTOR        # the first volume descriptor, in sector 16
MAGIC = b"CD001"


def looks_like_iso(head: bytes) -> bool:
    """True if head (the file's first 34 KiB or more) holds an ISO 9660 volume descriptor."""
    return head[DESCRIPTOR_OFFSET + 1:DESCRIPTOR_OFFSET + 6] == MAGIC


class IsoImage(ImageFile):
    """An ISO image; always read-only, so several VMs may share one (readers share the lock)."""

    sector_size = SECTOR
    format = "ISO"
    readonly = True

    def __init__(self, path: str, fd: int):
        """Take ownership of an open, locked fd (see raw.open_image_file); closes it on error."""
        self.path = path
        self._fd = fd
        try:
            self.size = file_size(fd, path)
            if self.size < DESCRIPTOR_OFFSET + SECTOR:
                raise ImageError(f"VERR_VD_ISO_INVALID: '{path}' is too small to be a CD/DVD image "
                                 f"({self.size} bytes)")
            if self.size % SECTOR:
                raise ImageError(f"VERR_VD_ISO_INVALID: '{path}' is {self.size} bytes, not a whole "
                                 f"number of {SECTOR}-byte CD sectors")
            magic = bytearray(len(MAGIC))
            pread_exact(fd, path, memoryview(magic), DESCRIPTOR_OFFSET + 1)
            if bytes(magic) != MAGIC:
                raise ImageError(f"VERR_VD_ISO_INVALID: '{path}' is not an ISO 9660 CD/DVD image "
                                 f"(no \"CD001\" volume descriptor at offset 0x{DESCRIPTOR_OFFSET + 1:x})")
        except BaseException:
            os.close(fd)
            raise

    def write(self, offset: int, data: bytes) -> None:
        raise ImageError(f"The CD/DVD image '{self.path}' is read-only")



def open(path: str, readonly: bool = True) -> IsoImage:  # noqa: A001 - the module's verb
    """Open an ISO image (read-only whatever readonly says: there is no writable CD image)."""
    return IsoImage(path, open_image_file(path, readonly=True))
