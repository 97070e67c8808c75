"""The 8042 keyboard controller at ports 0x60 (data) and 0x64 (status/command): command byte with
XLATE, self-tests, A20 and reset through the output port, IRQ1 and IRQ12, a PS/2 keyboard and mouse."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable

from services.hw.input.ps2 import RESEND, SET2_TO_SET1, Ps2Keyboard, Ps2Mouse

log = logging.getLogger("headbox.devices.i8042")

DATA_PORT, COMMAND_PORT = 0x60, 0x64
KEYBOARD_IRQ, MOUSE_IRQ = 1, 12

STATUS_OBF, STATUS_IBF, STATUS_SYS, STATUS_CMD = 0x01, 0x02, 0x04, 0x08
STATUS_UNLOCKED, STATUS_AUX, STATUS_TIMEOUT, STATUS_PARITY = 0x10, 0x20, 0x40, 0x80

CTR_KBDINT, CTR_AUXINT, CTR_SYS, CTR_KBDDIS, CTR_AUXDIS, CTR_XLATE = 0x01, 0x02, 0x04, 0x10, 0x20, 0x40
CTR_POWER_ON = CTR_KBDINT | CTR_AUXINT

OUT_RESET, OUT_A20, OUT_OBF, OUT_AUX_OBF = 0x01, 0x02, 0x10, 0x20
OUTPORT_POWER_ON = 0xCF          # not in reset, A20 on, keyboard clock/data lines high

RAM_SIZE = 32                    # byte 0 is the command byte; 0x21-0x3F / 0x61-0x7F reach the rest
CONTROLLER_QUEUE_LIMIT = 16
_WITH_DATA_BYTE = frozenset((0xD1, 0xD2, 0xD3, 0xD4)) | frozenset(range(0x60, 0x80))


class I8042:
    """The controller. Register it at DATA_PORT (length 1) and its `command_port` at COMMAND_PORT.

    `irq(line, level)` drives IRQ1/IRQ12: high while the output buffer holds a byte of that port
    and its interrupt is enabled in the command byte, dropped when the guest reads it (so every
    byte is a fresh edge). `reset()` is called for the output port's reset line (0xFE, 0xD1 with
    bit 0 clear); `on_a20_change(enabled)` for its A20 line. Host input goes to `.keyboard.key()`
    and `.mouse.mouse()`; a lock lets it arrive on another thread than the guest's port accesses."""

    name = "i8042"

    def __init__(self, *, irq: Callable[[int, bool], None] | None = None,
                 reset: Callable[[], None] | None = None,
                 on_a20_change: Callable[[bool], None] | None = None,
                 keyboard: Ps2Keyboard | None = None, mouse: Ps2Mouse | None | bool = True):
        self.irq = irq
        self.reset_machine = reset
        self.on_a20_change = on_a20_change
        self.keyboard = keyboard if keyboard is not None else Ps2Keyboard()
        self.mouse = (Ps2Mouse() if mouse is True else mouse) or None
        self.lock = threading.RLock()
        self.keyboard.notify = self._input_arrived
        if self.mouse is not None:
            self.mouse.notify = self._input_arrived
        self.command_port = I8042CommandPort(self)
        self.lines = {KEYBOARD_IRQ: False, MOUSE_IRQ: False}
        self._power_on()

    def _power_on(self) -> None:
        self.ram = bytearray(RAM_SIZE)
        self.ram[0] = CTR_POWER_ON
        self.sys_flag = False          # status bit 2: set by the self-test or the command byte
        self.last_was_command = True
        self.pending = 0               # a controller command waiting for its data byte
        self.outport = OUTPORT_POWER_ON
        self.queue: deque[tuple[int, bool, bool]] = deque()   # controller-made bytes: (byte, aux, timeout)
        self.out: int | None = None
        self.out_aux = False
        self.out_timeout = False
        self.last_out = 0
        self.xlate_break = False        # an F0 seen by the translator, waiting for its code

    @property
    def ctr(self) -> int:
        return self.ram[0]

    @property
    def a20(self) -> bool:
        return bool(self.outport & OUT_A20)

    # -- guest side ------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """Port 0x60: the output buffer (reading it empties it)."""
        with self.lock:
            if self.out is None:
                return self.last_out       # real controllers show the stale byte again
            value, self.out = self.out, None
            self.last_out = value
            self._update_lines()           # drop the line so the next byte is a new edge
            self._refill()
            return value

    def write(self, offset: int, size: int, value: int) -> None:
        """Port 0x60: a data byte for the pending controller command, else for the keyboard."""
        value &= 0xFF
        with self.lock:
            self.last_was_command = False
            command, self.pending = self.pending, 0
            if command == 0:
                # Sending to the keyboard enables its interface, as controllers do (and QEMU).
                self.ram[0] &= ~CTR_KBDDIS
                self.keyboard.command(value)
            elif 0x60 <= command < 0x80:
                self._write_ram(command - 0x60, value)
            elif command == 0xD1:
                self._write_outport(value)
            elif command == 0xD2:
                self._queue(value, aux=False)
            elif command == 0xD3:
                self._queue(value, aux=True)
            elif command == 0xD4:
                if self.mouse is not None:
                    self.mouse.command(value)
                else:
                    self._queue(RESEND, aux=True, timeout=True)   # nobody on the aux port
            self._refill()

    def read_status(self) -> int:
        with self.lock:
            status = STATUS_UNLOCKED
            if self.out is not None:
                status |= STATUS_OBF
                if self.out_aux:
                    status |= STATUS_AUX
                if self.out_timeout:
                    status |= STATUS_TIMEOUT
            if self.sys_flag:
                status |= STATUS_SYS
            if self.last_was_command:
                status |= STATUS_CMD
            return status

    def write_command(self, value: int) -> None:
        value &= 0xFF
        with self.lock:
            self.last_was_command = True
            self.pending = 0
            if value in _WITH_DATA_BYTE:
                self.pending = value
            elif 0x20 <= value < 0x40:
                self._queue(self.ram[value - 0x20])
            elif value == 0xA4:
                self._queue(0xF1)             # no password installed
            elif value == 0xA7:
                self.ram[0] |= CTR_AUXDIS
            elif value == 0xA8:
                self.ram[0] &= ~CTR_AUXDIS
            elif value in (0xA9, 0xAB):
                self._queue(0x00)             # interface test: no clock or data line stuck
            elif value == 0xAA:
                self.sys_flag = True
                self._queue(0x55)
            elif value == 0xAD:
                self.ram[0] |= CTR_KBDDIS
            elif value == 0xAE:
                self.ram[0] &= ~CTR_KBDDIS
            elif value == 0xC0:
                self._queue(0x80)             # input port: keyboard not inhibited by the key lock
            elif value == 0xD0:
                self._queue(self._outport_value())
            elif value == 0xDD:
                self._write_outport(self.outport & ~OUT_A20)
            elif value == 0xDF:
                self._write_outport(self.outport | OUT_A20)
            elif value == 0xE0:
                self._queue(0x00)             # test inputs: clock and data low
            elif value >= 0xF0:
                # Pulse output-port bits 3-0 where the command has a 0; only bit 0 (reset) matters.
                if not value & OUT_RESET and self.reset_machine is not None:
                    self.reset_machine()
            else:
                log.debug("unknown 8042 command %#04x", value)
            self._refill()

    # -- internals -------------------------------------------------------------------------------
    def _write_ram(self, index: int, value: int) -> None:
        self.ram[index] = value
        if index == 0:
            self.sys_flag = bool(value & CTR_SYS)
            if not value & CTR_XLATE:
                self.xlate_break = False
            self._update_lines()

    def _outport_value(self) -> int:
        value = self.outport & ~(OUT_OBF | OUT_AUX_OBF)
        if self.out is not None:
            value |= OUT_AUX_OBF if self.out_aux else OUT_OBF
        return value

    def _write_outport(self, value: int) -> None:
        old_a20 = self.a20
        self.outport = (value | OUT_RESET) & ~(OUT_OBF | OUT_AUX_OBF)
        if self.a20 != old_a20 and self.on_a20_change is not None:
            self.on_a20_change(self.a20)
        if not value & OUT_RESET and self.reset_machine is not None:
            self.reset_machine()

    def _queue(self, byte: int, aux: bool = False, timeout: bool = False) -> None:
        if len(self.queue) < CONTROLLER_QUEUE_LIMIT:
            self.queue.append((byte & 0xFF, aux, timeout))

    def _input_arrived(self) -> None:
        with self.lock:
            self._refill()

    def _refill(self) -> None:
        """Load the output buffer when it is empty: controller replies first, then the keyboard,
        then the mouse, each only while its interface is enabled in the command byte."""
        if self.out is None:
            if self.queue:
                self.out, self.out_aux, self.out_timeout = self.queue.popleft()
            else:
                ctr = self.ctr
                if not ctr & CTR_KBDDIS:
                    self._load_keyboard_byte()
                if self.out is None and self.mouse is not None and not ctr & CTR_AUXDIS \
                        and self.mouse.has_output():
                    self.out, self.out_aux, self.out_timeout = self.mouse.pop(), True, False
        self._update_lines()

    def _load_keyboard_byte(self) -> None:
        keyboard = self.keyboard
        while keyboard.has_output():
            byte = keyboard.pop()
            if self.ctr & CTR_XLATE:
                # The PC/XT translation: set-2 codes become set-1 ones, F0 becomes bit 7 of the next.
                if byte == 0xF0:
                    self.xlate_break = True
                    continue
                byte = SET2_TO_SET1.get(byte, byte)
                if self.xlate_break:
                    byte |= 0x80
                    self.xlate_break = False
            self.out, self.out_aux, self.out_timeout = byte, False, False
            return

    def _update_lines(self) -> None:
        full = self.out is not None
        ctr = self.ctr
        self._set_line(KEYBOARD_IRQ, full and not self.out_aux and bool(ctr & CTR_KBDINT))
        self._set_line(MOUSE_IRQ, full and self.out_aux and bool(ctr & CTR_AUXINT))

    def _set_line(self, line: int, level: bool) -> None:
        if self.lines[line] != level:
            self.lines[line] = level
            if self.irq is not None:
                self.irq(line, level)

    # -- platform --------------------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self._power_on()
            self.keyboard.reset()
            if self.mouse is not None:
                self.mouse.reset()
            self._update_lines()

    def snapshot(self) -> dict:
        with self.lock:
            return {"ram": bytes(self.ram), "sys_flag": self.sys_flag,
                    "last_was_command": self.last_was_command, "pending": self.pending,
                    "outport": self.outport, "queue": [list(entry) for entry in self.queue],
                    "out": self.out, "out_aux": self.out_aux, "out_timeout": self.out_timeout,
                    "last_out": self.last_out, "xlate_break": self.xlate_break,
                    "lines": [self.lines[KEYBOARD_IRQ], self.lines[MOUSE_IRQ]],
                    "keyboard": self.keyboard.snapshot(),
                    "mouse": self.mouse.snapshot() if self.mouse is not None else None}

    def restore(self, state: dict) -> None:
        with self.lock:
            if (state["mouse"] is None) != (self.mouse is None):
                raise ValueError("the saved keyboard controller state and this VM differ in having a mouse")
            ram = bytes(state["ram"])
            if len(ram) != RAM_SIZE:
                raise ValueError(f"8042 state has {len(ram)} bytes of RAM, expected {RAM_SIZE}")
            self.ram = bytearray(ram)
            self.sys_flag = bool(state["sys_flag"])
            self.last_was_command = bool(state["last_was_command"])
            pending = int(state["pending"])
            self.pending = pending if pending in _WITH_DATA_BYTE else 0
            self.outport = int(state["outport"]) & 0xFF
            self.queue = deque((int(b) & 0xFF, bool(a), bool(t))
                               for b, a, t in state["queue"][:CONTROLLER_QUEUE_LIMIT])
            self.out = None if state["out"] is None else int(state["out"]) & 0xFF
            self.out_aux = bool(state["out_aux"])
            self.out_timeout = bool(state["out_timeout"])
            self.last_out = int(state["last_out"]) & 0xFF
            self.xlate_break = bool(state["xlate_break"])
            # The interrupt controller's own state was restored with the vCPUs; no edge is replayed.
            self.lines = {KEYBOARD_IRQ: bool(state["lines"][0]), MOUSE_IRQ: bool(state["lines"][1])}
            self.keyboard.restore(state["keyboard"])
            if self.mouse is not None:
                self.mouse.restore(state["mouse"])


class I8042CommandPort:
    """Port 0x64 of the controller: status on read, commands on write. It holds no state of its
    own (the controller's snapshot covers both ports)."""

    name = "i8042-command"

    def __init__(self, controller: I8042):
        self.controller = controller

    def read(self, offset: int, size: int) -> int:
        return self.controller.read_status()

    def write(self, offset: int, size: int, value: int) -> None:
        self.controller.write_command(value)

    def snapshot(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        if state:
            raise ValueError("the 8042 command port has no state of its own")
