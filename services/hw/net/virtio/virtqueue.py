"""A split virtqueue as legacy virtio lays it out from one page frame: descriptor table, available
ring, and the used ring on the next 4096-byte boundary. Chains come out, used buffers go back."""

from __future__ import annotations

import struct
from typing import Callable

from services.hw.net.virtio.complaints import Complaints

ALIGN = 4096                        # legacy virtio-PCI: the used ring starts on a page
DESC_NEXT, DESC_WRITE, DESC_INDIRECT = 0x1, 0x2, 0x4
AVAIL_F_NO_INTERRUPT = 0x1
MAX_INDIRECT = 1024                 # entries in one indirect table; Linux uses a few dozen at most
_DESCRIPTOR = struct.Struct("<QIHH")    # address, length, flags, next
_USED_ELEMENT = struct.Struct("<II")    # head, bytes written

Segments = list[tuple[int, int]]        # (guest address, length)
Chain = tuple[int, Segments, Segments]  # (head, device-readable, device-writable)


class RingError(Exception):
    """The driver broke the ring's rules; the queue stops until it is set up again."""


def need_event(event: int, new: int, old: int) -> bool:
    """EVENT_IDX: whether moving an index from `old` to `new` passed the other side's `event`."""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


class Virtqueue:
    def __init__(self, size: int, memory, on_dma_write: Callable[[int, int], None], complaints: Complaints,
                 name: str):
        if size <= 0 or size & (size - 1) or size > 32768:
            raise ValueError(f"a virtqueue size is a power of two up to 32768, not {size}")
        self.size, self.memory, self.on_dma_write = size, memory, on_dma_write
        self.complaints, self.name = complaints, name
        self.reset()

    def reset(self) -> None:
        self.pfn = 0
        self.broken = False
        self.last_avail = 0                 # the next available-ring entry the device takes
        self.avail_seen = 0                 # the driver's avail->idx as last read
        self.used_idx = 0                   # the device's used->idx (published or about to be)
        self.signalled_used = 0             # used->idx when the device last decided on an interrupt
        self.signalled_valid = False        # no decision since setup: the next one interrupts
        self._lay_out()

    def _lay_out(self) -> None:
        size = self.size
        self.descriptors = self.pfn * ALIGN
        self.avail = self.descriptors + 16 * size
        self.used_event_at = self.avail + 4 + 2 * size
        self.used = (self.used_event_at + 2 + ALIGN - 1) & ~(ALIGN - 1)
        self.avail_event_at = self.used + 4 + 8 * size
        self.end = self.avail_event_at + 2

    @property
    def ready(self) -> bool:
        return self.pfn != 0 and not self.broken

    def set_pfn(self, pfn: int) -> None:
        """The driver placed the rings at page `pfn` (0: it took the queue away)."""
        self.reset()
        self.pfn = pfn
        self._lay_out()
        if pfn:
            try:                            # once here, so that the hot paths need not check
                self.memory.read(self.descriptors, self.end - self.descriptors)
            except ValueError:
                self.stop("rings at page %#x are not guest RAM", pfn)

    def stop(self, reason: str, *args) -> None:
        self.broken = True
        self.complaints.say(f"{self.name}-stopped", f"{self.name} queue stopped until reset: {reason}", *args)

    # -- taking chains -----------------------------------------------------------------------
    def _refresh(self) -> bool:
        """Read avail->idx; whether chains are waiting. An index more than a ring ahead is garbage."""
        idx = int.from_bytes(self.memory.read(self.avail + 2, 2), "little")
        if (idx - self.last_avail) & 0xFFFF > self.size:
            self.stop("available index %d is more than %d past %d", idx, self.size, self.last_avail)
            return False
        self.avail_seen = idx
        return idx != self.last_avail

    def pop(self) -> Chain | None:
        """The next available chain, or None (none waiting, or the queue is stopped)."""
        if self.broken or not self.pfn:
            return None
        try:
            if self.last_avail == self.avail_seen and not self._refresh():
                return None
            slot = self.avail + 4 + 2 * (self.last_avail & (self.size - 1))
            chain = self._chain(int.from_bytes(self.memory.read(slot, 2), "little"))
        except RingError as error:
            self.stop("%s", error)
            return None
        except ValueError:
            self.stop("a descriptor table (indirect, or a restored ring) is not guest RAM")
            return None
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return chain

    def rewind(self, last_avail: int) -> None:
        """Give back chains taken since `last_avail` (the device found it could not use them)."""
        self.last_avail = last_avail

    def _chain(self, head: int) -> Chain:
        read = self.memory.read
        table, limit = None, self.size          # None: the ring's own descriptor table
        index, hops = head, 0
        readable: Segments = []
        writable: Segments = []
        while True:
            if index >= limit:
                raise RingError(f"descriptor {index} is past the end of a table of {limit}")
            if table is None:
                address, length, flags, following = _DESCRIPTOR.unpack(read(self.descriptors + 16 * index, 16))
            else:
                address, length, flags, following = _DESCRIPTOR.unpack_from(table, 16 * index)
            if flags & DESC_INDIRECT:
                if table is not None or hops:
                    raise RingError("an indirect descriptor inside a chain or an indirect table")
                if not length or length % 16 or length > 16 * MAX_INDIRECT:
                    raise RingError(f"an indirect table of {length} bytes")
                table, limit, index = read(address, length), length // 16, 0
                continue
            if length:
                (writable if flags & DESC_WRITE else readable).append((address, length))
            if not flags & DESC_NEXT:
                return head, readable, writable
            hops += 1
            if hops >= limit:
                raise RingError(f"chain from descriptor {head} is longer than its table: a loop")
            index = following

    # -- returning buffers -------------------------------------------------------------------
    def put(self, head: int, written: int) -> None:
        """Return a chain to the driver (seen by it at the next publish())."""
        address = self.used + 4 + 8 * (self.used_idx & (self.size - 1))
        try:
            self.memory.write(address, _USED_ELEMENT.pack(head, written))
        except ValueError:          # only a restored state can place the rings outside RAM
            self.stop("the used ring is not guest RAM")
            return
        self.on_dma_write(address, 8)
        self.used_idx = (self.used_idx + 1) & 0xFFFF

    def publish(self, event_idx: bool) -> bool:
        """Make the put() buffers visible; whether the driver wants an interrupt for them."""
        memory = self.memory
        try:
            memory.write(self.used + 2, self.used_idx.to_bytes(2, "little"))
            self.on_dma_write(self.used + 2, 2)
            if event_idx:
                old, new = self.signalled_used, self.used_idx
                valid = self.signalled_valid
                self.signalled_used, self.signalled_valid = new, True
                event = int.from_bytes(memory.read(self.used_event_at, 2), "little")
                return not valid or need_event(event, new, old)
            return not int.from_bytes(memory.read(self.avail, 2), "little") & AVAIL_F_NO_INTERRUPT
        except ValueError:
            self.stop("the rings are not guest RAM")
            return False

    def ask_for_notify(self) -> bool:
        """EVENT_IDX: ask for a kick when the driver adds a chain past those it has added so
        far, then look again, since it may have added one before it could see the request.
        Whether it did."""
        if not self.ready:
            return False
        seen = self.avail_seen          # read by the pop() that found nothing
        try:
            self.memory.write(self.avail_event_at, seen.to_bytes(2, "little"))
            self.on_dma_write(self.avail_event_at, 2)
            self._refresh()
        except ValueError:
            self.stop("the rings are not guest RAM")
            return False
        return self.avail_seen != seen

    # -- state -------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"size": self.size, "pfn": self.pfn, "broken": self.broken, "last_avail": self.last_avail,
                "used_idx": self.used_idx, "signalled_used": self.signalled_used,
                "signalled_valid": self.signalled_valid}

    def restore(self, state: dict) -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"the saved {self.name} queue has {state['size']} entries, not {self.size}")
        self.reset()
        self.pfn = int(state["pfn"]) & 0xFFFFFFFF
        self.broken = bool(state["broken"])
        self.last_avail = self.avail_seen = int(state["last_avail"]) & 0xFFFF
        self.used_idx = int(state["used_idx"]) & 0xFFFF
        self.signalled_used = int(state["signalled_used"]) & 0xFFFF
        self.signalled_valid = bool(state["signalled_valid"])
        self._lay_out()
