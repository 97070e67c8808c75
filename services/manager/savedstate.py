"""A VM's saved state (controlvm savestate): its processor and device state and guest memory in one
0600 file, <home>/savedstates/<uuid>.sav; startvm restores from it into processes started waiting.

Layout: MAGIC, an 8-byte little-endian header length, the msgpack header {config, cpu, devices,
areas: [[name, size], ...]}, then each area's bytes in order, all-zero chunks left as file holes."""

from __future__ import annotations

import os
import struct

import msgpack

from services.ipc.naming import GUEST_MEMORY, shm_name
from services.ipc.shm import SharedRegion

MAGIC = b"HEADBOX-SAVED-STATE-1\n"
AREAS = GUEST_MEMORY
CHUNK = 1 << 20


class SavedStateError(Exception):
    """The file is unreadable or does not fit the VM; one line for the user."""


def path_for(home: str, uuid: str) -> str:
    return os.path.join(home, "savedstates", f"{uuid}.sav")


def exists(home: str, uuid: str) -> bool:
    return os.path.exists(path_for(home, uuid))


def save(path: str, vm_id: str, config: dict, cpu, devices) -> int:
    """Write the state of the paused VM vm_id; returns the file's size. Atomic: a crash leaves no file."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    regions = [SharedRegion.open(shm_name(vm_id, name)) for name in AREAS]
    temporary = path + ".tmp"
    try:
        header = msgpack.packb({"config": config, "cpu": cpu, "devices": devices,
                                "areas": [[name, region.size] for name, region in zip(AREAS, regions)]},
                               use_bin_type=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(MAGIC + struct.pack("<Q", len(header)) + header)
            for region in regions:
                view = memoryview(region.buf)
                for offset in range(0, region.size, CHUNK):
                    chunk = view[offset:offset + CHUNK]
                    if chunk.tobytes().count(0) == len(chunk):
                        file.seek(len(chunk), os.SEEK_CUR)     # a hole: most RAM is never touched
                    else:
                        file.write(chunk)
                view.release()
            file.truncate()
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        return os.path.getsize(path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    finally:
        for region in regions:
            region.close()


def load(path: str, vm_id: str) -> dict:
    """Read the header and copy the memory into the waiting VM's regions; returns the header."""
    try:
        file = open(path, "rb")  # noqa: SIM115 - the with below closes it
    except OSError as error:
        raise SavedStateError(f"cannot read the saved state '{path}': {error.strerror}") from None
    with file:
        if file.read(len(MAGIC)) != MAGIC:
            raise SavedStateError(f"'{path}' is not a Headbox saved state")
        (length,) = struct.unpack("<Q", file.read(8))
        try:
            header = msgpack.unpackb(file.read(length), raw=False, strict_map_key=False)
        except ValueError as error:
            raise SavedStateError(f"the saved state '{path}' is corrupt: {error}") from None
        for name, size in header["areas"]:
            region = SharedRegion.open(shm_name(vm_id, name))
            try:
                if region.size != size:
                    raise SavedStateError(f"the saved state's {name} is {size >> 20} MiB, the VM's "
                                          f"{region.size >> 20} MiB")
                view = memoryview(region.buf)
                done = 0
                while done < size:
                    got = file.readinto(view[done:min(size, done + CHUNK)])
                    if not got:
                        raise SavedStateError(f"the saved state '{path}' is truncated")
                    done += got
                view.release()
            finally:
                region.close()
    return header
