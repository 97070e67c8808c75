"""Client input (MS-RDPBCGR 2.2.8.1.1.3 slow path, 2.2.8.1.2 fast path): keyboard scancodes, Unicode
keys, mouse with wheel, extended buttons, toggle-key sync and QoE timestamps as typed events."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vrdp.pdu.wire import Reader
from services.vrdp.tpkt import (
    FASTPATH_FLAG_ENCRYPTED,
    ProtocolError,
    build_fastpath,
    parse_fastpath_header,
)

# Slow-path messageType.
INPUT_EVENT_SYNC = 0x0000
INPUT_EVENT_UNUSED = 0x0002
INPUT_EVENT_SCANCODE = 0x0004
INPUT_EVENT_UNICODE = 0x0005
INPUT_EVENT_MOUSE = 0x8001
INPUT_EVENT_MOUSEX = 0x8002
INPUT_EVENT_MOUSEREL = 0x8004

KBDFLAGS_EXTENDED = 0x0100
KBDFLAGS_EXTENDED1 = 0x0200
KBDFLAGS_DOWN = 0x4000
KBDFLAGS_RELEASE = 0x8000

# Fast-path eventCode (top 3 bits of the event header) and eventFlags (low 5 bits).
FASTPATH_INPUT_EVENT_SCANCODE = 0
FASTPATH_INPUT_EVENT_MOUSE = 1
FASTPATH_INPUT_EVENT_MOUSEX = 2
FASTPATH_INPUT_EVENT_SYNC = 3
FASTPATH_INPUT_EVENT_UNICODE = 4
FASTPATH_INPUT_EVENT_RELMOUSE = 5
FASTPATH_INPUT_EVENT_QOE_TIMESTAMP = 6
FASTPATH_INPUT_KBDFLAGS_RELEASE = 0x01
FASTPATH_INPUT_KBDFLAGS_EXTENDED = 0x02
FASTPATH_INPUT_KBDFLAGS_EXTENDED1 = 0x04

PTR_FLAGS_HWHEEL = 0x0400
PTR_FLAGS_WHEEL = 0x0200
PTR_FLAGS_WHEEL_NEGATIVE = 0x0100
WHEEL_ROTATION_MASK = 0x01FF
PTR_FLAGS_MOVE = 0x0800
PTR_FLAGS_DOWN = 0x8000
PTR_FLAGS_BUTTON1 = 0x1000  # left
PTR_FLAGS_BUTTON2 = 0x2000  # right
PTR_FLAGS_BUTTON3 = 0x4000  # middle
PTR_XFLAGS_DOWN = 0x8000
PTR_XFLAGS_BUTTON1 = 0x0001
PTR_XFLAGS_BUTTON2 = 0x0002

TS_SYNC_SCROLL_LOCK = 0x1
TS_SYNC_NUM_LOCK = 0x2
TS_SYNC_CAPS_LOCK = 0x4
TS_SYNC_KANA_LOCK = 0x8


@dataclass(frozen=True)
class KeyboardEvent:
    """A PS/2 set-1 make/break code; `extended` means the 0xE0 prefix, `extended1` the 0xE1 (Pause)."""
    scancode: int
    release: bool = False
    extended: bool = False
    extended1: bool = False


@dataclass(frozen=True)
class UnicodeKeyEvent:
    code: int
    release: bool = False


@dataclass(frozen=True)
class MouseEvent:
    flags: int
    x: int
    y: int

    @property
    def moved(self) -> bool:
        return bool(self.flags & PTR_FLAGS_MOVE)

    @property
    def button(self) -> int | None:
        """1 left, 2 right, 3 middle, or None if no button changed (wheel flags reuse low bits)."""
        for number, mask in ((1, PTR_FLAGS_BUTTON1), (2, PTR_FLAGS_BUTTON2), (3, PTR_FLAGS_BUTTON3)):
            if self.flags & mask:
                return number
        return None

    @property
    def pressed(self) -> bool:
        return bool(self.flags & PTR_FLAGS_DOWN)

    def _rotation(self) -> int:
        # A 9-bit two's complement value; positive = away from the user (up / right).
        value = self.flags & WHEEL_ROTATION_MASK
        return value - 0x200 if self.flags & PTR_FLAGS_WHEEL_NEGATIVE else value

    @property
    def wheel(self) -> int:
        return self._rotation() if self.flags & PTR_FLAGS_WHEEL else 0

    @property
    def hwheel(self) -> int:
        return self._rotation() if self.flags & PTR_FLAGS_HWHEEL else 0


@dataclass(frozen=True)
class ExtendedMouseEvent:
    flags: int
    x: int
    y: int

    @property
    def button(self) -> int | None:
        """4 (back) or 5 (forward)."""
        if self.flags & PTR_XFLAGS_BUTTON1:
            return 4
        if self.flags & PTR_XFLAGS_BUTTON2:
            return 5
        return None

    @property
    def pressed(self) -> bool:
        return bool(self.flags & PTR_XFLAGS_DOWN)


@dataclass(frozen=True)
class RelativeMouseEvent:
    flags: int
    dx: int
    dy: int


@dataclass(frozen=True)
class SyncEvent:
    toggle_flags: int  # TS_SYNC_*: the client's lock-key state, to be mirrored into the guest


@dataclass(frozen=True)
class QoeTimestamp:
    timestamp: int  # milliseconds, client clock


InputEvent = (KeyboardEvent | UnicodeKeyEvent | MouseEvent | ExtendedMouseEvent | RelativeMouseEvent
              | SyncEvent | QoeTimestamp)


# --- slow path -------------------------------------------------------------------------------------

def parse_input_pdu(payload: bytes) -> list[InputEvent]:
    """TS_INPUT_PDU_DATA (the payload of a PDUTYPE2_INPUT Data PDU)."""
    reader = Reader(payload, "Input PDU")
    count = reader.u16()
    reader.skip(2)
    events: list[InputEvent] = []
    for _ in range(count):
        reader.skip(4)  # eventTime: unreliable across clients, and the VM has its own clock
        message_type = reader.u16()
        if message_type == INPUT_EVENT_SYNC:
            reader.skip(2)
            events.append(SyncEvent(reader.u32()))
            continue
        a, b, c = reader.u16(), reader.u16(), reader.u16()
        if message_type == INPUT_EVENT_SCANCODE:
            events.append(KeyboardEvent(b & 0xFF, bool(a & KBDFLAGS_RELEASE), bool(a & KBDFLAGS_EXTENDED),
                                        bool(a & KBDFLAGS_EXTENDED1)))
        elif message_type == INPUT_EVENT_UNICODE:
            events.append(UnicodeKeyEvent(b, bool(a & KBDFLAGS_RELEASE)))
        elif message_type == INPUT_EVENT_MOUSE:
            events.append(MouseEvent(a, b, c))
        elif message_type == INPUT_EVENT_MOUSEX:
            events.append(ExtendedMouseEvent(a, b, c))
        elif message_type == INPUT_EVENT_MOUSEREL:
            events.append(RelativeMouseEvent(a, _signed16(b), _signed16(c)))
        elif message_type != INPUT_EVENT_UNUSED:
            raise ProtocolError(f"unknown slow-path input event type 0x{message_type:04X}")
    return events


def _signed16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


def build_input_pdu(events: list[InputEvent]) -> bytes:
    """TS_INPUT_PDU_DATA, as rdesktop and aardwolf send it; used by tests and client tooling."""
    out = struct.pack("<HH", len(events), 0)
    for event in events:
        if isinstance(event, SyncEvent):
            out += struct.pack("<IHHI", 0, INPUT_EVENT_SYNC, 0, event.toggle_flags)
            continue
        if isinstance(event, KeyboardEvent):
            flags = ((KBDFLAGS_RELEASE if event.release else KBDFLAGS_DOWN)
                     | (KBDFLAGS_EXTENDED if event.extended else 0) | (KBDFLAGS_EXTENDED1 if event.extended1 else 0))
            fields = (INPUT_EVENT_SCANCODE, flags, event.scancode, 0)
        elif isinstance(event, UnicodeKeyEvent):
            fields = (INPUT_EVENT_UNICODE, KBDFLAGS_RELEASE if event.release else 0, event.code, 0)
        elif isinstance(event, MouseEvent):
            fields = (INPUT_EVENT_MOUSE, event.flags, event.x, event.y)
        elif isinstance(event, ExtendedMouseEvent):
            fields = (INPUT_EVENT_MOUSEX, event.flags, event.x, event.y)
        elif isinstance(event, RelativeMouseEvent):
            fields = (INPUT_EVENT_MOUSEREL, event.flags, event.dx & 0xFFFF, event.dy & 0xFFFF)
        else:
            raise TypeError(f"{type(event).__name__} has no slow-path form")
        out += struct.pack("<IHHHH", 0, *fields)
    return out


# --- fast path -------------------------------------------------------------------------------------

def parse_fastpath_events(body: bytes, num_events: int) -> list[InputEvent]:
    """The events of a fast-path input PDU after its header (and after decryption); `num_events` is
    the header's 4-bit count, 0 meaning a count byte starts the body."""
    reader = Reader(body, "fast-path input")
    if num_events == 0:
        num_events = reader.u8()
    events: list[InputEvent] = []
    for _ in range(num_events):
        header = reader.u8()
        code, flags = header >> 5, header & 0x1F
        if code == FASTPATH_INPUT_EVENT_SCANCODE:
            events.append(KeyboardEvent(reader.u8(), bool(flags & FASTPATH_INPUT_KBDFLAGS_RELEASE),
                                        bool(flags & FASTPATH_INPUT_KBDFLAGS_EXTENDED),
                                        bool(flags & FASTPATH_INPUT_KBDFLAGS_EXTENDED1)))
        elif code == FASTPATH_INPUT_EVENT_MOUSE:
            events.append(MouseEvent(reader.u16(), reader.u16(), reader.u16()))
        elif code == FASTPATH_INPUT_EVENT_MOUSEX:
            events.append(ExtendedMouseEvent(reader.u16(), reader.u16(), reader.u16()))
        elif code == FASTPATH_INPUT_EVENT_SYNC:
            events.append(SyncEvent(flags))
        elif code == FASTPATH_INPUT_EVENT_UNICODE:
            events.append(UnicodeKeyEvent(reader.u16(), bool(flags & FASTPATH_INPUT_KBDFLAGS_RELEASE)))
        elif code == FASTPATH_INPUT_EVENT_RELMOUSE:
            events.append(RelativeMouseEvent(reader.u16(), reader.i16(), reader.i16()))
        elif code == FASTPATH_INPUT_EVENT_QOE_TIMESTAMP:
            events.append(QoeTimestamp(reader.u32()))
        else:
            raise ProtocolError(f"unknown fast-path input event code {code}")
    if reader.remaining:
        raise ProtocolError(f"{reader.remaining} bytes after {num_events} fast-path input events")
    return events


def parse_fastpath_input(frame: bytes) -> list[InputEvent]:
    """A whole unencrypted fast-path input frame (TLS sessions). Under Standard RDP Security the
    session strips the signature and decrypts, then calls parse_fastpath_events."""
    header = parse_fastpath_header(frame)
    if header.flags & FASTPATH_FLAG_ENCRYPTED:
        raise ProtocolError("encrypted fast-path input given to the plain parser")
    return parse_fastpath_events(frame[header.header_size:], header.num_events)


def encode_fastpath_event(event: InputEvent) -> bytes:
    if isinstance(event, KeyboardEvent):
        flags = ((FASTPATH_INPUT_KBDFLAGS_RELEASE if event.release else 0)
                 | (FASTPATH_INPUT_KBDFLAGS_EXTENDED if event.extended else 0)
                 | (FASTPATH_INPUT_KBDFLAGS_EXTENDED1 if event.extended1 else 0))
        return bytes((FASTPATH_INPUT_EVENT_SCANCODE << 5 | flags, event.scancode))
    if isinstance(event, MouseEvent):
        return bytes((FASTPATH_INPUT_EVENT_MOUSE << 5,)) + struct.pack("<HHH", event.flags, event.x, event.y)
    if isinstance(event, ExtendedMouseEvent):
        return bytes((FASTPATH_INPUT_EVENT_MOUSEX << 5,)) + struct.pack("<HHH", event.flags, event.x, event.y)
    if isinstance(event, SyncEvent):
        return bytes((FASTPATH_INPUT_EVENT_SYNC << 5 | (event.toggle_flags & 0x1F),))
    if isinstance(event, UnicodeKeyEvent):
        flags = FASTPATH_INPUT_KBDFLAGS_RELEASE if event.release else 0
        return bytes((FASTPATH_INPUT_EVENT_UNICODE << 5 | flags,)) + struct.pack("<H", event.code)
    if isinstance(event, RelativeMouseEvent):
        return bytes((FASTPATH_INPUT_EVENT_RELMOUSE << 5,)) + struct.pack("<Hhh", event.flags, event.dx, event.dy)
    if isinstance(event, QoeTimestamp):
        return bytes((FASTPATH_INPUT_EVENT_QOE_TIMESTAMP << 5,)) + struct.pack("<I", event.timestamp)
    raise TypeError(f"not an input event: {event!r}")


def build_fastpath_input(events: list[InputEvent]) -> bytes:
    """A whole unencrypted fast-path input frame, as FreeRDP sends it (count in the header when < 16)."""
    body = b"".join(encode_fastpath_event(event) for event in events)
    if 0 < len(events) < 16:
        return build_fastpath(body, num_events=len(events))
    return build_fastpath(bytes((len(events),)) + body)
