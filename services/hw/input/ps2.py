"""PS/2 keyboard and mouse as the 8042 sees them (command bytes in, replies and input bytes out),
with the host-side API that turns RDP input (set-1 scan codes, relative motion) into their bytes."""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable

log = logging.getLogger("headbox.devices.ps2")

ACK, RESEND, BAT_OK, ECHO = 0xFA, 0xFE, 0xAA, 0xEE
REPLY_LIMIT = 16          # replies to one command never exceed a few bytes; junk commands cannot pile up
KEY_QUEUE_LIMIT = 256     # bytes of key data held while the guest does not read (about 60 keystrokes)
MOUSE_QUEUE_LIMIT = 256   # bytes of packets; further motion waits as pending deltas
MOTION_LIMIT = 4096       # pending counts kept per axis; beyond it motion is lost and flagged as overflow

LED_SCROLL, LED_NUM, LED_CAPS = 0x01, 0x02, 0x04

# Set-1 code -> set-2 code, one table for plain and E0-extended keys: the 8042's translation is
# byte-wise, so an extended key's set-2 code is the same as that of the plain key sharing its set-1 code.
SET1_TO_SET2 = {
    0x01: 0x76, 0x02: 0x16, 0x03: 0x1E, 0x04: 0x26, 0x05: 0x25, 0x06: 0x2E, 0x07: 0x36, 0x08: 0x3D,
    0x09: 0x3E, 0x0A: 0x46, 0x0B: 0x45, 0x0C: 0x4E, 0x0D: 0x55, 0x0E: 0x66, 0x0F: 0x0D, 0x10: 0x15,
    0x11: 0x1D, 0x12: 0x24, 0x13: 0x2D, 0x14: 0x2C, 0x15: 0x35, 0x16: 0x3C, 0x17: 0x43, 0x18: 0x44,
    0x19: 0x4D, 0x1A: 0x54, 0x1B: 0x5B, 0x1C: 0x5A, 0x1D: 0x14, 0x1E: 0x1C, 0x1F: 0x1B, 0x20: 0x23,
    0x21: 0x2B, 0x22: 0x34, 0x23: 0x33, 0x24: 0x3B, 0x25: 0x42, 0x26: 0x4B, 0x27: 0x4C, 0x28: 0x52,
    0x29: 0x0E, 0x2A: 0x12, 0x2B: 0x5D, 0x2C: 0x1A, 0x2D: 0x22, 0x2E: 0x21, 0x2F: 0x2A, 0x30: 0x32,
    0x31: 0x31, 0x32: 0x3A, 0x33: 0x41, 0x34: 0x49, 0x35: 0x4A, 0x36: 0x59, 0x37: 0x7C, 0x38: 0x11,
    0x39: 0x29, 0x3A: 0x58, 0x3B: 0x05, 0x3C: 0x06, 0x3D: 0x04, 0x3E: 0x0C, 0x3F: 0x03, 0x40: 0x0B,
    0x41: 0x83, 0x42: 0x0A, 0x43: 0x01, 0x44: 0x09, 0x45: 0x77, 0x46: 0x7E, 0x47: 0x6C, 0x48: 0x75,
    0x49: 0x7D, 0x4A: 0x7B, 0x4B: 0x6B, 0x4C: 0x73, 0x4D: 0x74, 0x4E: 0x79, 0x4F: 0x69, 0x50: 0x72,
    0x51: 0x7A, 0x52: 0x70, 0x53: 0x71, 0x54: 0x84, 0x56: 0x61, 0x57: 0x78, 0x58: 0x07, 0x59: 0x0F,
    0x5B: 0x1F, 0x5C: 0x27, 0x5D: 0x2F, 0x5E: 0x37, 0x5F: 0x3F, 0x63: 0x5E, 0x64: 0x08, 0x65: 0x10,
    0x66: 0x18, 0x67: 0x20, 0x68: 0x28, 0x69: 0x30, 0x6A: 0x38, 0x6B: 0x40, 0x6C: 0x48, 0x6D: 0x50,
    0x6E: 0x57, 0x70: 0x13, 0x73: 0x51, 0x76: 0x5F, 0x79: 0x64, 0x7B: 0x67, 0x7D: 0x6A, 0x7E: 0x6D,
}

# What the 8042 does to keyboard bytes with XLATE on: set-2 codes become set-1 codes (a preceding
# F0 turns into bit 7); other bytes (E0, E1, replies) pass. 0x00 (overrun) and 0x02 (the scan-set
# query's answer for set 2) have set-1 values of their own.
SET2_TO_SET1 = {v: k for k, v in SET1_TO_SET2.items()}
SET2_TO_SET1.update({0x00: 0xFF, 0x02: 0x41})

_SHIFTS = {(0x2A, False), (0x36, False)}
_CTRLS = {(0x1D, False), (0x1D, True)}
_ALTS = {(0x38, False), (0x38, True)}
_MODIFIERS = _SHIFTS | _CTRLS | _ALTS
PRINT_SCREEN, SYSRQ, PAUSE_CODE, NUM_LOCK, SCROLL_LOCK = 0x37, 0x54, 0x45, 0x45, 0x46


class Ps2Port:
    """The byte queues behind one PS/2 port. Replies to commands go ahead of queued input, so a
    guest waiting for an ACK is not handed a backlog of keystrokes first (and none are lost)."""

    def __init__(self):
        self.replies: deque[int] = deque()
        self.data: deque[int] = deque()
        # Set by the controller: called when input arrives, so it can fill its output buffer.
        self.notify: Callable[[], None] = lambda: None
        self.last_byte = 0

    def has_output(self) -> bool:
        return bool(self.replies or self.data)

    def pop(self) -> int:
        """The next byte for the controller (call only when has_output())."""
        byte = self.replies.popleft() if self.replies else self.data.popleft()
        self.last_byte = byte
        return byte

    def _reply(self, *data: int) -> None:
        for byte in data:
            if len(self.replies) < REPLY_LIMIT:
                self.replies.append(byte)

    def _port_snapshot(self) -> dict:
        return {"replies": bytes(self.replies), "data": bytes(self.data), "last_byte": self.last_byte}

    def _port_restore(self, state: dict) -> None:
        self.replies = deque(bytes(state["replies"])[:REPLY_LIMIT])
        self.data = deque(bytes(state["data"]))
        self.last_byte = int(state["last_byte"]) & 0xFF


class Ps2Keyboard(Ps2Port):
    """An MF2 keyboard (ID AB 83) in scan-code set 1 or 2.

    Host side: key(code, extended, pressed) with RDP's set-1 codes; Pause arrives from RDP as an
    `extended1` 0x1D event followed by 0x45 (or use pause()). `on_leds(bits)` hears LED changes
    (LED_SCROLL | LED_NUM | LED_CAPS) so the client's indicators can follow the guest."""

    def __init__(self, on_leds: Callable[[int], None] | None = None):
        super().__init__()
        self.on_leds = on_leds
        self.leds = 0
        self.reset()

    def reset(self) -> None:
        self.replies.clear()
        self.data.clear()
        self._defaults()
        self.scanning = True
        self.expecting = 0          # the command whose parameter byte comes next
        self.held: set[tuple[int, bool]] = set()
        self.pause_pending = False
        self._set_leds(0)

    def _defaults(self) -> None:
        self.scan_set = 2
        self.typematic = 0x2B       # 10.9 characters/s after 500 ms; repeats come from the client
        self.data.clear()

    def lock_presses(self, locks: int) -> list[int]:
        """The set-1 codes of the lock keys to press (and release) so that the guest's locks, as
        its LEDs show them, become `locks` (LED_* bits): RDP's keyboard-indicator sync."""
        return [code for bit, code in ((LED_SCROLL, 0x46), (LED_NUM, 0x45), (LED_CAPS, 0x3A))
                if (locks ^ self.leds) & bit]

    def sync_locks(self, locks: int) -> None:
        for code in self.lock_presses(locks):
            self.key(code, False, True)
            self.key(code, False, False)

    def _set_leds(self, leds: int) -> None:
        leds &= LED_SCROLL | LED_NUM | LED_CAPS
        if leds != self.leds:
            self.leds = leds
            if self.on_leds is not None:
                self.on_leds(leds)

    # -- bytes from the controller -------------------------------------------------------------
    def command(self, byte: int) -> None:
        byte &= 0xFF
        # A parameter byte that looks like a command is one: keyboards resynchronise this way.
        if self.expecting and byte < 0xED:
            self._parameter(byte)
        else:
            self.expecting = 0
            self._command(byte)
        self.notify()

    def _command(self, byte: int) -> None:
        if byte in (0xED, 0xF3, 0xF0):
            self.expecting = byte
            self._reply(ACK)
        elif byte == 0xEE:
            self._reply(ECHO)
        elif byte == 0xF2:
            self._reply(ACK, 0xAB, 0x83)
        elif byte == 0xF4:
            self.data.clear()
            self.scanning = True
            self._reply(ACK)
        elif byte == 0xF5:
            self._defaults()
            self.scanning = False
            self._reply(ACK)
        elif byte == 0xF6:
            self._defaults()
            self.scanning = True
            self._reply(ACK)
        elif byte == 0xFE:
            self._reply(self.last_byte)
        elif byte == 0xFF:
            self.reset()
            self._reply(ACK, BAT_OK)
        elif 0xF7 <= byte <= 0xFD:
            self._reply(ACK)        # set-3 key-type commands: accepted, nothing to change in sets 1/2
        else:
            self._reply(RESEND)

    def _parameter(self, byte: int) -> None:
        command, self.expecting = self.expecting, 0
        if command == 0xED:
            self._set_leds(byte)
            self._reply(ACK)
        elif command == 0xF3:
            self.typematic = byte & 0x7F
            self._reply(ACK)
        elif byte == 0:                  # 0xF0 00: which set?
            self._reply(ACK, self.scan_set)
        elif byte in (1, 2):
            self.scan_set = byte
            self.data.clear()
            self._reply(ACK)
        else:
            self._reply(RESEND)          # set 3 is not offered; Linux then stays with set 2

    # -- host input ------------------------------------------------------------------------------
    def key(self, code: int, extended: bool = False, pressed: bool = True, *,
            extended1: bool = False) -> None:
        """A key event in set-1 numbering, as RDP sends it (code 0x01-0x7F, E0 prefix = extended)."""
        code &= 0x7F
        if extended1:
            # RDP's first half of Pause (E1 1D); the 0x45 that follows completes it.
            self.pause_pending = code == 0x1D
            return
        if self.pause_pending:
            self.pause_pending = False
            if code == PAUSE_CODE:
                if pressed:
                    self.pause()
                return
        if code == NUM_LOCK and extended:
            extended = False            # Windows numbers NumLock E0 45; the keyboard sends plain 45
        held = (code, extended)
        if held in _MODIFIERS:
            if pressed:
                self.held.add(held)
            else:
                self.held.discard(held)
        if not self.scanning:
            return
        if extended and code == PRINT_SCREEN:
            self._queue(self._print_screen(pressed))
        elif extended and code == SCROLL_LOCK:
            if pressed:                 # Ctrl+Break: make and break at once, nothing on release
                self._queue(self._encode(code, True, True) + self._encode(code, True, False))
        elif code in SET1_TO_SET2:
            self._queue(self._encode(code, extended, pressed))
        else:
            log.debug("no PS/2 scan code for set-1 code %#04x", code)

    def pause(self) -> None:
        """The Pause key: one make sequence and no break, as on a real keyboard."""
        if not self.scanning:
            return
        if self.scan_set == 1:
            self._queue(b"\xe1\x1d\x45\xe1\x9d\xc5")
        else:
            self._queue(b"\xe1\x14\x77\xe1\xf0\x14\xf0\x77")

    def _print_screen(self, pressed: bool) -> bytes:
        # The key's bytes depend on the modifiers held, as its firmware does it.
        if self.held & _ALTS:
            return self._encode(SYSRQ, False, pressed)
        if self.held & (_SHIFTS | _CTRLS):
            return self._encode(PRINT_SCREEN, True, pressed)
        fake_shift = self._encode(0x2A, True, pressed)
        key = self._encode(PRINT_SCREEN, True, pressed)
        return fake_shift + key if pressed else key + fake_shift

    def _encode(self, code: int, extended: bool, pressed: bool) -> bytes:
        prefix = b"\xe0" if extended else b""
        if self.scan_set == 1:
            return prefix + bytes((code | (0 if pressed else 0x80),))
        return prefix + (b"" if pressed else b"\xf0") + bytes((SET1_TO_SET2[code],))

    def _queue(self, sequence: bytes) -> None:
        # A sequence goes in whole or not at all: half a key confuses the guest's decoder for good.
        if len(self.data) + len(sequence) > KEY_QUEUE_LIMIT:
            log.debug("keyboard queue full: key dropped")
            return
        self.data.extend(sequence)
        self.notify()

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {**self._port_snapshot(), "scan_set": self.scan_set, "typematic": self.typematic,
                "scanning": self.scanning, "expecting": self.expecting, "leds": self.leds,
                "held": [[c, e] for c, e in sorted(self.held)], "pause_pending": self.pause_pending}

    def restore(self, state: dict) -> None:
        self._port_restore(state)
        self.scan_set = int(state["scan_set"]) if state["scan_set"] in (1, 2) else 2
        self.typematic = int(state["typematic"]) & 0x7F
        self.scanning = bool(state["scanning"])
        self.expecting = int(state["expecting"])
        self.held = {(int(c), bool(e)) for c, e in state["held"]}
        self.pause_pending = bool(state["pause_pending"])
        self._set_leds(int(state["leds"]))


BUTTON_LEFT, BUTTON_RIGHT, BUTTON_MIDDLE, BUTTON_BACK, BUTTON_FORWARD = 0x01, 0x02, 0x04, 0x08, 0x10
MOUSE_PLAIN, MOUSE_INTELLI, MOUSE_EXPLORER = 0, 3, 4
_STATUS_REMOTE, _STATUS_ENABLED, _STATUS_SCALE21 = 0x40, 0x20, 0x10


class Ps2Mouse(Ps2Port):
    """A PS/2 mouse that becomes an IntelliMouse (ID 3, wheel) or IntelliMouse Explorer (ID 4,
    wheel and buttons 4/5) when the guest knocks with the sample-rate sequences drivers use.

    Host side: mouse(dx, dy, dz, buttons) with dx right and dy down (screen directions), dz > 0 the
    wheel turned away from the user, buttons BUTTON_* bits. Motion that does not fit the queue
    waits and goes out in further packets as the guest reads."""

    def __init__(self):
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self.replies.clear()
        self.data.clear()
        self._defaults()
        self.kind = MOUSE_PLAIN
        self.expecting = 0
        self.wrap = False
        self.rates: list[int] = []
        self.buttons = 0
        self.last_packet = b""

    def _defaults(self) -> None:
        self.rate = 100
        self.resolution = 2
        self.scale21 = False
        self.reporting = False
        self.remote = False
        self.dx = self.dy = self.dz = 0
        self.overflow_x = self.overflow_y = False
        self.dirty = False           # a button change not yet reported
        self.data.clear()

    # -- bytes from the controller -------------------------------------------------------------
    def command(self, byte: int) -> None:
        byte &= 0xFF
        if self.wrap and byte not in (0xEC, 0xFF):
            self._reply(byte)
        elif self.expecting:
            self._parameter(byte)
        else:
            self._command(byte)
        self.notify()

    def _command(self, byte: int) -> None:
        if byte in (0xE8, 0xF3):
            self.expecting = byte
            self._reply(ACK)
        elif byte == 0xE6:
            self.scale21 = False
            self._reply(ACK)
        elif byte == 0xE7:
            self.scale21 = True
            self._reply(ACK)
        elif byte == 0xE9:
            self._reply(ACK, self._status(), self.resolution, self.rate)
        elif byte == 0xEA:
            self.remote = False
            self._reply(ACK)
        elif byte == 0xEB:
            self._reply(ACK)
            self._reply(*self._take_packet(stream=False))
        elif byte == 0xEC:
            self.wrap = False
            self._reply(ACK)
        elif byte == 0xEE:
            self.wrap = True
            self._reply(ACK)
        elif byte == 0xF0:
            self.remote = True
            self._reply(ACK)
        elif byte == 0xF2:
            self._reply(ACK, self.kind)
        elif byte == 0xF4:
            self.reporting = True
            self._reply(ACK)
        elif byte == 0xF5:
            self.reporting = False
            self.data.clear()
            self._reply(ACK)
        elif byte == 0xF6:
            self._defaults()
            self._reply(ACK)
        elif byte == 0xFE:
            self._reply(*(self.last_packet or bytes((self.last_byte,))))
        elif byte == 0xFF:
            self.reset()
            self._reply(ACK, BAT_OK, MOUSE_PLAIN)
        else:
            self._reply(RESEND)

    def _parameter(self, byte: int) -> None:
        command, self.expecting = self.expecting, 0
        if command == 0xE8:
            self.resolution = byte & 0x03
            self._reply(ACK)
            return
        self.rate = byte
        self._reply(ACK)
        self.rates = (self.rates + [byte])[-3:]
        if self.rates == [200, 100, 80] and self.kind == MOUSE_PLAIN:
            self.kind = MOUSE_INTELLI
        elif self.rates == [200, 200, 80]:
            self.kind = MOUSE_EXPLORER

    def _status(self) -> int:
        b = self.buttons
        return ((_STATUS_REMOTE if self.remote else 0) | (_STATUS_ENABLED if self.reporting else 0)
                | (_STATUS_SCALE21 if self.scale21 else 0) | (0x04 if b & BUTTON_LEFT else 0)
                | (0x02 if b & BUTTON_MIDDLE else 0) | (0x01 if b & BUTTON_RIGHT else 0))

    # -- host input ------------------------------------------------------------------------------
    def mouse(self, dx: int, dy: int, dz: int = 0, buttons: int | None = None) -> None:
        """Relative motion and the buttons now held (None: unchanged)."""
        if buttons is not None and buttons & 0x1F != self.buttons:
            self.buttons = buttons & 0x1F
            self.dirty = True
        # Real mice count nothing while reporting is off; in remote mode the guest polls.
        if not self.reporting and not self.remote:
            self.dirty = False
            return
        self.dx, self.overflow_x = self._accumulate(self.dx, dx, self.overflow_x)
        self.dy, self.overflow_y = self._accumulate(self.dy, -dy, self.overflow_y)   # PS/2: up is +
        self.dz = max(-MOTION_LIMIT, min(MOTION_LIMIT, self.dz - dz))  # IntelliMouse: + scrolls down
        if not self.remote:
            self._stream()

    @staticmethod
    def _accumulate(total: int, delta: int, overflow: bool) -> tuple[int, bool]:
        total += delta
        if abs(total) > MOTION_LIMIT:
            return max(-MOTION_LIMIT, min(MOTION_LIMIT, total)), True
        return total, overflow

    def pop(self) -> int:
        byte = super().pop()
        if not self.remote and self.reporting:
            self._stream(notify=False)  # room again for waiting motion; the controller is reading
        return byte

    def _packet_size(self) -> int:
        return 3 if self.kind == MOUSE_PLAIN else 4

    def _pending(self) -> bool:
        wheel = self.dz if self.kind != MOUSE_PLAIN else 0
        return bool(self.dx or self.dy or wheel or self.dirty)

    def _stream(self, notify: bool = True) -> None:
        queued = False
        while self._pending() and len(self.data) + self._packet_size() <= MOUSE_QUEUE_LIMIT:
            self.data.extend(self._take_packet(stream=True))
            queued = True
        if queued and notify:
            self.notify()

    def _take_packet(self, stream: bool) -> bytes:
        """One packet carrying as much of the pending motion as fits; the rest stays pending."""
        x, y = _clamp(self.dx, -256, 255), _clamp(self.dy, -256, 255)
        self.dx -= x
        self.dy -= y
        overflow_x, overflow_y = self.overflow_x, self.overflow_y
        self.overflow_x = self.overflow_y = False
        if stream and self.scale21:
            x, y = _scale21(x), _scale21(y)
            overflow_x |= not -256 <= x <= 255
            overflow_y |= not -256 <= y <= 255
            x, y = _clamp(x, -256, 255), _clamp(y, -256, 255)
        b = self.buttons
        head = (0x08 | (b & (BUTTON_LEFT | BUTTON_RIGHT | BUTTON_MIDDLE)) | (0x10 if x < 0 else 0)
                | (0x20 if y < 0 else 0) | (0x40 if overflow_x else 0) | (0x80 if overflow_y else 0))
        packet = bytearray((head, x & 0xFF, y & 0xFF))
        if self.kind == MOUSE_INTELLI:
            z = _clamp(self.dz, -128, 127)
            self.dz -= z
            packet.append(z & 0xFF)
        elif self.kind == MOUSE_EXPLORER:
            z = _clamp(self.dz, -8, 7)
            self.dz -= z
            packet.append((z & 0x0F) | (0x10 if b & BUTTON_BACK else 0) | (0x20 if b & BUTTON_FORWARD else 0))
        else:
            self.dz = 0                 # a plain mouse has no wheel to report it with
        self.dirty = False
        self.last_packet = bytes(packet)
        return self.last_packet

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {**self._port_snapshot(), "rate": self.rate, "resolution": self.resolution,
                "scale21": self.scale21, "reporting": self.reporting, "remote": self.remote,
                "kind": self.kind, "expecting": self.expecting, "wrap": self.wrap, "rates": list(self.rates),
                "buttons": self.buttons, "motion": [self.dx, self.dy, self.dz],
                "overflow": [self.overflow_x, self.overflow_y], "dirty": self.dirty,
                "last_packet": self.last_packet}

    def restore(self, state: dict) -> None:
        self._port_restore(state)
        self.rate = int(state["rate"]) & 0xFF
        self.resolution = int(state["resolution"]) & 0x03
        self.scale21 = bool(state["scale21"])
        self.reporting = bool(state["reporting"])
        self.remote = bool(state["remote"])
        self.kind = int(state["kind"]) if state["kind"] in (MOUSE_PLAIN, MOUSE_INTELLI, MOUSE_EXPLORER) else 0
        self.expecting = int(state["expecting"])
        self.wrap = bool(state["wrap"])
        self.rates = [int(r) for r in state["rates"]][-3:]
        self.buttons = int(state["buttons"]) & 0x1F
        self.dx, self.dy, self.dz = (max(-MOTION_LIMIT, min(MOTION_LIMIT, int(v))) for v in state["motion"])
        self.overflow_x, self.overflow_y = (bool(v) for v in state["overflow"])
        self.dirty = bool(state["dirty"])
        self.last_packet = bytes(state["last_packet"])


def _clamp(value: int, low: int, high: int) -> int:
    return low if value < low else high if value > high else value


def _scale21(value: int) -> int:
    # The 2:1 scaling curve of the PS/2 mouse specification: small movements stay fine-grained.
    magnitude = abs(value)
    scaled = (0, 1, 1, 3, 6, 9)[magnitude] if magnitude < 6 else 2 * magnitude
    return scaled if value >= 0 else -scaled
