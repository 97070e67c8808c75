"""The guest memory a teleport moves: the VM's shared regions (RAM, video RAM) opened by name.

Changed pages are found by comparing each region with a private copy (the shadow) of what was sent:
that sees every writer (vCPUs, DMA by the device process, device emulation) on both accelerators,
and sending from the shadow means the target always holds exactly what the last comparison saw."""

from __future__ import annotations

import numpy as np

from services.ipc.naming import shm_name
from services.ipc.shm import SharedRegion
from services.teleport.records import PAGE, PAGE_WORDS

AREAS = ("ram", "vram")            # index in this tuple = area number in the stream
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

    def changed(self) -> np.ndarray:
        """Indices of the pages that differ from the shadow, which is brought up to date; the first
        call takes the shadow and reports every page."""
        if self.shadow is None:
            self.shadow = self.live.copy()
            return np.arange(self.pages)
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


class TargetArea:
    """The target's side: pages written straight into the waiting VM's region."""

    def __init__(self, vm_id: str, name: str):
        self.region = SharedRegion.open(shm_name(vm_id, name))
        self.pages = self.region.size // PAGE
        self.view = np.frombuffer(self.region.buf, dtype=np.uint8).reshape(self.pages, PAGE)

    def write(self, first: int, data: bytes) -> None:
        count = len(data) // PAGE
        if len(data) % PAGE or first < 0 or first + count > self.pages:
            raise ValueError(f"page data outside the region ({first}+{count} of {self.pages})")
        self.view[first:first + count] = np.frombuffer(data, dtype=np.uint8).reshape(count, PAGE)

    def zero(self, first: int, count: int) -> None:
        if first < 0 or count < 0 or first + count > self.pages:
            raise ValueError(f"zero run outside the region ({first}+{count} of {self.pages})")
        self.view[first:first + count] = 0

    def close(self) -> None:
        self.view = None
        self.region.close()
