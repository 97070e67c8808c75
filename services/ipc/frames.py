"""The net channel's shared rings: Ethernet frames between a VM's network cards (vCPU process)
and their NAT engines (device process) without a round trip per frame.

Each adapter has one region (naming.NET_REGIONS[slot]), created by the vCPU process, holding two
single-producer single-consumer rings: `to_nat` (the guest's transmissions) and `to_guest`. A
producer fills slots and then moves `head`; the consumer reads and then moves `tail`. The
counters only grow (mod 2**32), so full and empty never look alike. After a batch the producer
posts a doorbell, [NET_VERSION, slot], on the consumer's PULL socket: `net-out` (bound by the
device process) or `net-in` (bound by the vCPU process)."""

from __future__ import annotations

import ctypes
import struct

import zmq

from services.ipc.messages import pack, unpack
from services.ipc.naming import restrict_socket

NET_VERSION = 1
SLOTS = 256                        # frames a ring holds
SLOT_SIZE = 2048                   # a 2-byte length and the frame
MAX_FRAME = SLOT_SIZE - 2          # 1518-byte VLAN frames fit; jumbo frames do not
HEADER = 128                       # head at 0 and tail at 64: separate cache lines
RING_SIZE = HEADER + SLOTS * SLOT_SIZE
REGION_SIZE = 2 * RING_SIZE        # to_nat, then to_guest
TO_NAT, TO_GUEST = 0, 1
_U16 = struct.Struct("<H")


class FrameRing:
    """One direction over `buffer` (a writable memoryview of RING_SIZE bytes)."""

    def __init__(self, buffer: memoryview):
        if len(buffer) < RING_SIZE:
            raise ValueError(f"a frame ring needs {RING_SIZE} bytes, not {len(buffer)}")
        self.buffer = buffer
        # The counters are read and written as whole aligned words by the other process while
        # we work: ctypes does one 4-byte load or store (struct's "<I" writes byte by byte, and
        # a reader could see half of a new value).
        self._head = ctypes.c_uint32.from_buffer(buffer, 0)
        self._tail = ctypes.c_uint32.from_buffer(buffer, 64)

    def _counters(self) -> tuple[int, int]:
        return self._head.value, self._tail.value

    def pending(self) -> int:
        head, tail = self._counters()
        return (head - tail) & 0xFFFFFFFF

    def push(self, frame) -> bool:
        """Producer: False when the ring is full or the frame too big (the caller drops or keeps it)."""
        length = len(frame)
        head, tail = self._counters()
        if length > MAX_FRAME or (head - tail) & 0xFFFFFFFF >= SLOTS:
            return False
        at = HEADER + (head % SLOTS) * SLOT_SIZE
        _U16.pack_into(self.buffer, at, length)
        self.buffer[at + 2:at + 2 + length] = frame
        self._head.value = (head + 1) & 0xFFFFFFFF            # publish after the data
        return True

    def peek(self) -> bytes | None:
        """Consumer: the oldest frame, left in the ring until pop()."""
        head, tail = self._counters()
        if head == tail:
            return None
        if (head - tail) & 0xFFFFFFFF > SLOTS:
            raise ValueError("the frame ring's counters are corrupt")
        at = HEADER + (tail % SLOTS) * SLOT_SIZE
        length = min(_U16.unpack_from(self.buffer, at)[0], MAX_FRAME)
        return bytes(self.buffer[at + 2:at + 2 + length])

    def pop(self) -> None:
        self._tail.value = (self._tail.value + 1) & 0xFFFFFFFF

    def clear(self) -> None:
        """Consumer: drop everything queued (a reset of the card)."""
        self._tail.value = self._head.value


def rings(view: memoryview) -> tuple[FrameRing, FrameRing]:
    """(to_nat, to_guest) over an adapter's region."""
    return FrameRing(view[0:RING_SIZE]), FrameRing(view[RING_SIZE:2 * RING_SIZE])


class Doorbell:
    """Producer side: "adapter `slot` has frames for you", posted, never blocking the guest."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None):
        self.socket = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def ring(self, slot: int) -> None:
        try:
            self.socket.send(pack([NET_VERSION, slot]), zmq.NOBLOCK)
        except zmq.Again:
            pass            # the consumer is behind on doorbells: it drains every ring anyway

    def close(self) -> None:
        self.socket.close()


class DoorbellListener:
    """Consumer side: a bound PULL socket (0600) to poll; take() empties it."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None):
        self.socket = (context or zmq.Context.instance()).socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        restrict_socket(endpoint)

    def take(self) -> set[int]:
        """The adapter slots rung since the last call (malformed doorbells are ignored)."""
        slots = set()
        while True:
            try:
                message = unpack(self.socket.recv(zmq.NOBLOCK))
            except zmq.Again:
                return slots
            except Exception:       # msgpack raises several types for garbage
                continue
            if isinstance(message, list) and len(message) == 2 and message[0] == NET_VERSION \
                    and isinstance(message[1], int):
                slots.add(message[1])

    def close(self) -> None:
        self.socket.close()
