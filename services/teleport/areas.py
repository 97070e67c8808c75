"""The guest memory a teleport moves: the VM's shared regions (RAM, video RAM) opened by name, and
which of their pages changed since the last look.

The vCPU process's write log (services/vcpu/write_tracker.py: the kernel marks written pages, plus
the device DMA it is told of) is the fast way: pages are sent from the live region, and a page
written after the look is seen again at the next one. Where the kernel lacks it, each region is
compared with a private copy (the shadow) of what was sent, and pages are sent from the shadow, so
the target always holds exactly what the last comparison saw."""

from __future__ import annotations

import ctypes
import logging
import os

import numpy as np

from services.ipc import ops
from services.ipc.naming import GUEST_MEMORY, shm_name
from services.ipc.shm import SharedRegion
from services.teleport.records import PAGE, PAGE_WORDS

log = logging.getLogger("headbox.teleport")

AREAS = GUEST_MEMORY              # index in this tuple = area number in the stream
COMPARE_PAGES = 4096               # pages per comparison step: 16 MiB temporaries


class Area:
    def __init__(self, vm_id: str, name: str):
        self.name = name
        self.region = SharedRegion.open(shm_name(vm_id, name))
        if self.region.size % PAGE:
            raise ValueError(f"region {name} is not a whole number of pages")
        self.pages = self.region.size // PAGE
        self.live = np.frombuffer(self.region.buf, dtype=np.uint64).reshape(self.pages, PAGE_WORDS)
        self.shadow: np.ndarray | None = None

    def holes(self) -> list[tuple[int, int]]:
        """(first page, count) of the runs of pages never written (holes of the shared-memory file):
        zero without reading them, which is most of a fresh guest's RAM."""
        runs, fd = [], os.open(self.region.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            offset, size = 0, self.region.size
            while offset < size:
                try:
                    data = os.lseek(fd, offset, os.SEEK_DATA)
                except OSError:          # ENXIO: nothing but hole up to the end
                    data = size
                if data > offset:
                    runs.append((offset // PAGE, (min(data, size) - offset) // PAGE))
                if data >= size:
                    break
                offset = os.lseek(fd, data, os.SEEK_HOLE)
        finally:
            os.close(fd)
        return runs

    def populated(self) -> np.ndarray:
        """Indices of the pages outside holes()."""
        mask = np.ones(self.pages, dtype=bool)
        for first, count in self.holes():
            mask[first:first + count] = False
        return np.flatnonzero(mask)

    @property
    def send_view(self) -> np.ndarray:
        """Where page data is read from: the shadow when comparing, the region with the write log."""
        return self.live if self.shadow is None else self.shadow

    def changed(self) -> np.ndarray:
        """Indices of the pages that differ from the shadow, which is brought up to date; the first
        call takes the shadow and reports every page."""
        if self.shadow is None:
            self.shadow = self.live.copy()
            return None
        found = []
        for first in range(0, self.pages, COMPARE_PAGES):
            live = self.live[first:first + COMPARE_PAGES]
            shadow = self.shadow[first:first + COMPARE_PAGES]
            changed = np.flatnonzero((live != shadow).any(axis=1))
            if len(changed):
                shadow[changed] = live[changed]
                found.append(changed + first)
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)

    def close(self) -> None:
        self.live = self.shadow = None
        self.region.close()


class ChangeFinder:
    """One look per round at every area: the vCPU's write log when it has one, else shadows."""

    def __init__(self, vm, areas: list[Area]):
        self.vm, self.areas = vm, areas
        self.write_log = True
        self.started = False
        self.cpu_state = None

    def look(self, pause: bool = False) -> list[np.ndarray | None]:
        """Changed page indices per area; None for an area seen for the first time (every page).
        With pause, the vCPUs stop first and their state is kept in self.cpu_state."""
        self.cpu_state = None
        if self.write_log:
            try:
                reply = self.vm.vcpu(ops.DirtyPages(areas=[area.name for area in self.areas], pause=pause))
                self.cpu_state = reply.get("state")
            except Exception as error:
                if self.started:
                    raise
                self.write_log = False
                log.info("no write log in the vCPU process (%s): comparing memory instead", error)
            else:
                self.started = True
                return [None if reply["pages"][area.name] is None
                        else np.frombuffer(reply["pages"][area.name], dtype="<u4").astype(np.int64)
                        for area in self.areas]
        if pause:
            self.vm.vcpu(ops.Pause())
        return [area.changed() for area in self.areas]

    def stop(self) -> None:
        if self.write_log and self.started:
            try:
                self.vm.vcpu(ops.DirtyPages(areas=[], stop=True))
            except Exception as error:
                log.debug("ending the write log: %s", error)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)
_fallocate = _libc.fallocate
_KEEP_SIZE, _PUNCH_HOLE = 0x01, 0x02


class TargetArea:
    """The target's side: pages written straight into the waiting VM's region."""

    def __init__(self, vm_id: str, name: str):
        self.region = SharedRegion.open(shm_name(vm_id, name))
        self.fd = os.open(self.region.path, os.O_RDWR | os.O_CLOEXEC)
        self.pages = self.region.size // PAGE
        self.view = np.frombuffer(self.region.buf, dtype=np.uint8).reshape(self.pages, PAGE)

    def write(self, first: int, data: bytes) -> None:
        count = len(data) // PAGE
        if len(data) % PAGE or first < 0 or first + count > self.pages:
            raise ValueError(f"page data outside the region ({first}+{count} of {self.pages})")
        self.view[first:first + count] = np.frombuffer(data, dtype=np.uint8).reshape(count, PAGE)

    def zero(self, first: int, count: int) -> None:
        """Zero pages by punching a hole in the shared-memory file: writing zeros would allocate
        every page of a fresh region (most of a big guest's RAM is never touched)."""
        if first < 0 or count < 0 or first + count > self.pages:
            raise ValueError(f"zero run outside the region ({first}+{count} of {self.pages})")
        if count == 0:
            return
        if _fallocate(self.fd, _PUNCH_HOLE | _KEEP_SIZE, first * PAGE, count * PAGE) != 0:
            self.view[first:first + count] = 0      # a file system without holes

    def close(self) -> None:
        self.view = None
        os.close(self.fd)
        self.region.close()
