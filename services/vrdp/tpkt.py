"""TPKT framing (RFC 1006) and RDP fast-path framing: split a byte stream into whole PDUs.

Sans-I/O: FrameReader is fed bytes and yields frames; build_* return bytes; nothing here reads a socket."""

from __future__ import annotations

import enum
from dataclasses import dataclass

TPKT_VERSION = 3
TPKT_HEADER_SIZE = 4
# The smallest TPKT an RDP peer sends carries an X.224 Data TPDU header (3 bytes).
TPKT_MIN_LENGTH = 7
TPKT_MAX_LENGTH = 0xFFFF

# Fast-path lengths are 15 bits wide; the smallest frame is the header byte plus a 1-byte length.
FASTPATH_MIN_LENGTH = 2
FASTPATH_MAX_LENGTH = 0x7FFF

FASTPATH_ACTION_FASTPATH = 0x0
FASTPATH_ACTION_X224 = 0x3

# fpInputHeader/fpOutputHeader flags (top two bits of the first byte).
FASTPATH_FLAG_SECURE_CHECKSUM = 0x1
FASTPATH_FLAG_ENCRYPTED = 0x2


class ProtocolError(ValueError):
    """A peer sent bytes that do not decode; the connection that sent them must be closed."""


class FrameKind(enum.Enum):
    TPKT = "tpkt"
    FASTPATH = "fastpath"


@dataclass(frozen=True)
class Frame:
    kind: FrameKind
    data: bytes  # the whole frame, header included


@dataclass(frozen=True)
class FastPathHeader:
    action: int
    num_events: int  # 0 means "numEvents follows the length" (input) or is reserved (output)
    flags: int
    length: int  # of the whole PDU, header included
    header_size: int  # 2 or 3: where the body starts


def build_tpkt(payload: bytes) -> bytes:
    length = TPKT_HEADER_SIZE + len(payload)
    if length > TPKT_MAX_LENGTH:
        raise ValueError(f"TPKT payload of {len(payload)} bytes does not fit a 16-bit length")
    return bytes((TPKT_VERSION, 0)) + length.to_bytes(2, "big") + payload


def parse_tpkt(frame: bytes) -> bytes:
    """The payload (X.224 TPDU) of one complete TPKT frame."""
    if len(frame) < TPKT_HEADER_SIZE or frame[0] != TPKT_VERSION:
        raise ProtocolError("not a TPKT frame")
    length = int.from_bytes(frame[2:4], "big")
    if length != len(frame):
        raise ProtocolError(f"TPKT length {length} but frame has {len(frame)} bytes")
    return bytes(frame[TPKT_HEADER_SIZE:])


def is_fastpath(first_byte: int) -> bool:
    # The action bits tell the two framings apart: TPKT's version 3 has both bits set.
    return first_byte & 0x3 == FASTPATH_ACTION_FASTPATH


def _fastpath_length(data: bytes) -> tuple[int, int] | None:
    """(length, bytes used by header byte + length field), or None if more bytes are needed."""
    if len(data) < 2:
        return None
    if data[1] & 0x80:
        if len(data) < 3:
            return None
        return ((data[1] & 0x7F) << 8) | data[2], 3
    return data[1], 2


def parse_fastpath_header(frame: bytes) -> FastPathHeader:
    if not frame or not is_fastpath(frame[0]):
        raise ProtocolError("not a fast-path frame")
    parsed = _fastpath_length(frame)
    if parsed is None:
        raise ProtocolError("fast-path header truncated")
    length, header_size = parsed
    if length < header_size or length != len(frame):
        raise ProtocolError(f"fast-path length {length} but frame has {len(frame)} bytes")
    first = frame[0]
    return FastPathHeader(action=first & 0x3, num_events=(first >> 2) & 0xF, flags=first >> 6,
                          length=length, header_size=header_size)


def build_fastpath(body: bytes, flags: int = 0, num_events: int = 0) -> bytes:
    """A fast-path frame; the length is always written in the 2-byte form, as Windows does for output."""
    if not 0 <= flags <= 3 or not 0 <= num_events <= 15:
        raise ValueError("fast-path flags are 2 bits and numEvents 4 bits")
    length = 3 + len(body)
    if length > FASTPATH_MAX_LENGTH:
        raise ValueError(f"fast-path body of {len(body)} bytes exceeds the 15-bit length")
    first = (flags << 6) | (num_events << 2) | FASTPATH_ACTION_FASTPATH
    return bytes((first, 0x80 | (length >> 8), length & 0xFF)) + body


class FrameReader:
    """Incremental splitter of a client byte stream into TPKT and fast-path frames.

    Fast-path is only legal once the connection reached the data phase, so the owner turns it on
    with `fastpath=True`; before that a first byte other than 3 is a protocol error."""

    def __init__(self, fastpath: bool = False, max_tpkt_length: int = TPKT_MAX_LENGTH) -> None:
        self.fastpath = fastpath
        self.max_tpkt_length = max_tpkt_length
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive."""
        buffer = self._buffer
        if not buffer:
            return None
        first = buffer[0]
        if first == TPKT_VERSION:
            if len(buffer) < TPKT_HEADER_SIZE:
                return None
            length = int.from_bytes(buffer[2:4], "big")
            if not TPKT_MIN_LENGTH <= length <= self.max_tpkt_length:
                raise ProtocolError(f"TPKT length {length} out of range")
            kind = FrameKind.TPKT
        elif self.fastpath and is_fastpath(first):
            parsed = _fastpath_length(buffer)
            if parsed is None:
                return None
            length, header_size = parsed
            if length < max(header_size, FASTPATH_MIN_LENGTH):
                raise ProtocolError(f"fast-path length {length} shorter than its header")
            kind = FrameKind.FASTPATH
        else:
            raise ProtocolError(f"first byte 0x{first:02X} starts neither TPKT nor fast-path")
        if len(buffer) < length:
            return None
        frame = bytes(buffer[:length])
        del buffer[:length]
        return Frame(kind, frame)

    def __iter__(self):
        while (frame := self.next_frame()) is not None:
            yield frame

    def take_buffered(self) -> bytes:
        """Hand over bytes not yet framed, e.g. a TLS ClientHello that followed the X.224 request."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    @property
    def buffered(self) -> int:
        return len(self._buffer)
