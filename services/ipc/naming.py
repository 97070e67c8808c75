"""Where a VM's channels and shared-memory regions live: one private runtime folder per VM.

Sockets are ipc:// files in a 0700 folder and made 0600 after binding, so only the VM's owner can
reach them; shared-memory regions are named after the VM so every process can find them."""

from __future__ import annotations

import os
import re
import shutil

from services.private_file import private_folder

CHANNELS = ("io", "irq", "display", "input", "net-out", "net-in", "audio", "usb",
            "control-vcpu", "control-devices", "control-vrdp", "control-usbproxy", "control-teleport")


def _safe(vm_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", vm_id):
        raise ValueError(f"not a usable VM id: {vm_id!r}")
    return vm_id


def runtime_root(create: bool = True) -> str:
    """$XDG_RUNTIME_DIR/headbox, or /tmp/headbox-<uid>; private_folder() refuses one another user made."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = os.path.join(base, "headbox") if base else f"/tmp/headbox-{os.getuid()}"
    if create:
        if base:
            os.makedirs(base, mode=0o700, exist_ok=True)
        private_folder(root)
    return root


def runtime_dir(vm_id: str, create: bool = True) -> str:
    path = os.path.join(runtime_root(create), _safe(vm_id))
    if create:
        private_folder(path)
    return path


def remove_runtime_dir(vm_id: str) -> None:
    """A VM's folder once its processes are gone: stale sockets and its launch spec (which holds
    password hashes) do not outlive the run."""
    path = os.path.join(runtime_root(create=False), _safe(vm_id))
    if os.path.isdir(path) and not os.path.islink(path) and os.lstat(path).st_uid == os.geteuid():
        shutil.rmtree(path, ignore_errors=True)


def endpoint(vm_id: str, channel: str) -> str:
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    return "ipc://" + os.path.join(runtime_dir(vm_id), channel)


def restrict_socket(endpoint_: str) -> None:
    """ZeroMQ creates ipc files with the umask's mode; make them owner-only."""
    if endpoint_.startswith("ipc://"):
        os.chmod(endpoint_[len("ipc://"):], 0o600)


# The shared-memory regions of a VM, all created by its vCPU process.
RAM, VRAM, SURFACE = "ram", "vram", "surface"
NET_REGIONS = tuple(f"net{slot}" for slot in range(8))   # services/ipc/frames.py, one per adapter
VCPU_REGIONS = (RAM, VRAM, SURFACE, *NET_REGIONS)
GUEST_MEMORY = (RAM, VRAM)        # what holds guest-visible memory: saved and teleported, in this order


def shm_name(vm_id: str, region: str) -> str:
    return f"headbox-{_safe(vm_id)}-{region}"


def remove_regions(vm_id: str) -> None:
    """A killed vCPU process leaves its regions behind, and the VM's next start would take them for
    a running VM's."""
    for region in VCPU_REGIONS:
        try:
            os.unlink(f"/dev/shm/{shm_name(vm_id, region)}")
        except FileNotFoundError:
            pass
