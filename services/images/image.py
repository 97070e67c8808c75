"""Opening and creating disk and CD/DVD images by what they contain: the one entry point the
device process and the media registry use, with VirtualBox's one-line errors and file locking."""

from __future__ import annotations

import os
import struct
import uuid as uuidlib

from . import iso, raw, vdi
from .backend import BlockBackend, ImageError

KINDS = ("hdd", "dvd")
_PROBE = iso.DESCRIPTOR_OFFSET + iso.SECTOR


def probe(head: bytes, path: str) -> str:
    """'VDI', 'ISO' or 'RAW' from the first 34 KiB of a file. A .vdi name counts as VDI even with a
    broken signature, so a damaged VDI is reported as damaged instead of opened as a raw disk."""
    if len(head) >= 68 and struct.unpack_from("<I", head, 64)[0] == vdi.SIGNATURE:
        return "VDI"
    if iso.looks_like_iso(head):
        return "ISO"
    if path.lower().endswith(".vdi"):
        return "VDI"
    return "RAW"


def open_image(path: str, kind: str = "hdd", readonly: bool = False) -> BlockBackend:
    """Open a hard disk ('hdd': VDI or raw) or CD/DVD ('dvd': ISO, always read-only) image.

    A writer takes an exclusive lock on the file and a reader a shared one; a conflict is
    "'<path>' is already in use by another running VM"."""
    if kind not in KINDS:
        raise ImageError(f"Unknown medium type '{kind}' for '{path}' (expected hdd or dvd)")
    if kind == "dvd":
        readonly = True
    fd = raw.open_image_file(path, readonly)
    try:
        head = os.pread(fd, _PROBE, 0)
    except OSError as exc:
        os.close(fd)
        raise ImageError(f"Could not read the medium '{path}': {exc.strerror}") from None
    fmt = probe(head, path)
    if kind == "dvd":
        if fmt != "ISO":
            os.close(fd)
            what = "a VDI hard disk image" if fmt == "VDI" else "no \"CD001\" volume descriptor"
            raise ImageError(f"VERR_VD_ISO_INVALID: '{path}' is not an ISO 9660 CD/DVD image ({what})")
        return iso.IsoImage(path, fd)
    if fmt == "ISO":
        os.close(fd)
        raise ImageError(f"'{path}' is a CD/DVD image (ISO 9660) and cannot be used as a hard disk")
    if fmt == "VDI":
        return vdi.VdiImage(path, fd, readonly)
    return raw.RawImage(path, fd, readonly)


def create_disk(path: str, size_mib: int, format: str = "VDI", variant: str = "Standard",
                progress=None, uuid: uuidlib.UUID | None = None) -> uuidlib.UUID | None:
    """Create a hard disk image of size_mib MiB, as `VBoxManage createmedium disk` does; returns
    the VDI's UUID (None for raw, which has nowhere to keep one). progress(percent) is called
    with 0, 10, ... 100."""
    if not isinstance(size_mib, int) or size_mib <= 0:
        raise ImageError(f"Could not create the medium '{path}': size {size_mib!r} MB is not a "
                         "positive whole number")
    size = size_mib * vdi.MiB
    fmt = format.upper()
    if fmt == "VDI":
        return vdi.create(path, size, variant, uuid=uuid, progress=progress)
    if fmt == "RAW":
        raw.create(path, size, variant, progress=progress)
        return None
    raise ImageError(f"Could not create the medium '{path}': format '{format}' is not supported "
                     "(VDI or RAW)")
