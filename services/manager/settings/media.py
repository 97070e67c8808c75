"""Media files as the registry sees them: what an existing image is (format, UUID, capacity)
and creating a new disk image, with VirtualBox's one-line errors."""

from __future__ import annotations

import os
import struct
import uuid as uuidlib

from services.images import image, vdi
from services.images.backend import ImageError

from ..errors import E_INVALIDARG, FILE_ERROR, ManagerError

KINDS = {"disk": "hdd", "hdd": "hdd", "dvd": "dvd"}
_VDI_DISK_SIZE = struct.Struct("<Q")
_VDI_DISK_SIZE_OFFSET = 368        # cbDisk in the VDI header (after the 72-byte pre-header)


def kind_of(kind) -> str:
    """'hdd' or 'dvd' from a request's kind ("disk", "hdd" or "dvd")."""
    found = KINDS.get(str(kind).lower())
    if found is None:
        raise ManagerError(E_INVALIDARG, f"Invalid medium type '{kind}' (disk or dvd)")
    return found


def missing(path: str) -> ManagerError:
    return ManagerError(FILE_ERROR, f"Could not find file for the medium '{path}' (VERR_FILE_NOT_FOUND)")


def probe(path: str, kind: str) -> tuple[str, str]:
    """(uuid, format) of an existing image: a VDI keeps its UUID; raw and ISO images get a new one,
    as VirtualBox gives them."""
    if not os.path.exists(path):
        raise missing(path)
    try:
        with image.open_image(path, kind, readonly=True) as img:
            fmt = img.format
            uuid = str(img.uuid) if fmt == "VDI" else str(uuidlib.uuid4())
    except ImageError as exc:
        raise ManagerError(FILE_ERROR, str(exc)) from None
    return uuid, fmt


def capacity_bytes(path: str, fmt: str) -> int | None:
    """The guest-visible size, read without opening (and locking) the image, so media a running
    VM holds are listed too; None when the file cannot be read."""
    try:
        if fmt == "VDI":
            with open(path, "rb") as f:
                head = f.read(_VDI_DISK_SIZE_OFFSET + _VDI_DISK_SIZE.size)
            if len(head) < _VDI_DISK_SIZE_OFFSET + _VDI_DISK_SIZE.size:
                return None
            if struct.unpack_from("<I", head, 64)[0] != vdi.SIGNATURE:
                return None
            return _VDI_DISK_SIZE.unpack_from(head, _VDI_DISK_SIZE_OFFSET)[0]
        return os.stat(path).st_size
    except OSError:
        return None


def create_disk(path: str, size_mb, fmt: str, variant: str, progress=None) -> str:
    """Create a disk image like `VBoxManage createmedium disk`; returns its UUID."""
    if str(fmt).upper() != "VDI":
        raise ManagerError(E_INVALIDARG, f"Unsupported format '{fmt}': only VDI images can be created")
    if isinstance(size_mb, bool) or not isinstance(size_mb, int) or size_mb <= 0:
        raise ManagerError(E_INVALIDARG, f"Invalid size '{size_mb}': give the size in MB, a "
                                         "positive whole number")
    if str(variant).lower() not in ("standard", "fixed"):
        raise ManagerError(E_INVALIDARG, f"Invalid medium variant '{variant}' (Standard or Fixed)")
    if os.path.lexists(path):
        raise ManagerError(FILE_ERROR, f"Could not create the medium storage unit '{path}'.  VD: "
                                       f"cannot create image '{path}' (VERR_ALREADY_EXISTS)")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ManagerError(FILE_ERROR, f"Could not create the medium storage unit '{path}'.  VD: "
                                       f"the folder '{folder}' does not exist (VERR_PATH_NOT_FOUND)")
    try:
        return str(image.create_disk(path, size_mb, "VDI", variant.capitalize(), progress=progress))
    except ImageError as exc:
        raise ManagerError(FILE_ERROR, str(exc)) from None
