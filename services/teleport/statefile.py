"""A VM's saved state (controlvm savestate): its processor and device state and guest memory in one
0600 file (the manager keeps it as <home>/savedstates/<uuid>.sav); startvm restores from it into
processes started waiting. `save_vm` and `restore_vm` run in the VM's teleport program.

Layout: MAGIC, an 8-byte little-endian header length, the msgpack header {config, cpu, devices,
areas: [[name, size], ...]}, then each area's bytes in order, all-zero chunks left as file holes."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable

import msgpack

from services.ipc import ops
from services.ipc.naming import GUEST_MEMORY, shm_name
from services.ipc.shm import SharedRegion
from services.teleport.hardware import config_mismatch
from services.teleport.vm import TeleportError, VmControl

log = logging.getLogger("headbox.teleport")

MAGIC = b"HEADBOX-SAVED-STATE-1\n"
AREAS = GUEST_MEMORY
CHUNK = 1 << 20


class SavedStateError(TeleportError):
    """The file is unreadable or does not fit the VM; one line for the user."""


class SaveFailed(TeleportError):
    """The state file could not be written (VirtualBox: VBOX_E_FILE_ERROR)."""


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


def save_vm(vm_id: str, config: dict, path: str, report: Callable[[int], None]) -> dict:
    """Pause the VM (if it runs), write its state to `path`. On failure the VM runs on as before;
    on success it stays paused for its power-off."""
    vm = VmControl(vm_id, timeout_ms=60000)
    paused_by_us = False
    try:
        status = vm.vcpu(ops.Status())
        if status["state"] != "paused":
            vm.vcpu(ops.Pause())
            paused_by_us = True
        report(10)
        cpu = vm.vcpu(ops.Snapshot())["state"]
        devices = vm.devices(ops.Snapshot())["state"]
        report(30)
        try:
            size = save(path, vm_id, {**config, "accel": status.get("accel")}, cpu, devices)
        except OSError as error:
            raise SaveFailed(f"Failed to save the state to '{path}': {error.strerror or error}") from None
        report(90)
        return {"path": path, "bytes": size}
    except BaseException:
        if paused_by_us:
            try:
                vm.vcpu(ops.Resume())
            except TeleportError as error:
                log.error("resuming the VM after a failed savestate: %s", error)
        raise
    finally:
        vm.close()


def restore_vm(vm_id: str, config: dict, path: str, report: Callable[[int], None]) -> dict:
    """Load the saved state into the waiting (--incoming) VM, in a teleport target's order, and
    resume it. SavedStateError when the file does not fit."""
    vm = VmControl(vm_id, timeout_ms=60000)
    try:
        accel = vm.vcpu(ops.Status()).get("accel")
        header = load(path, vm_id)
        report(50)
        mismatch = config_mismatch(header["config"], {**config, "accel": accel})
        if mismatch:
            raise SavedStateError(mismatch)
        vm.vcpu(ops.Restore(state=header["cpu"]))
        vm.devices(ops.OpenMedia())
        vm.devices(ops.Restore(state=header["devices"]))
        vm.vcpu(ops.Resume())
        return {"path": path}
    finally:
        vm.close()
