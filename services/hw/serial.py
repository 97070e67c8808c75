"""A 16550A UART (COM1 0x3F8/IRQ4 ... COM4 0x2E8/IRQ3) as a sans-I/O device model.

Transmitted bytes go to an output callable at once (there is no wire to pace them); received bytes
are queued by receive(). The interrupt line follows IER, the pending causes and MCR's OUT2 gate,
as PC serial ports wire it; loopback mode satisfies the probes of SeaBIOS and Linux's 8250 driver."""

from __future__ import annotations

from collections import deque
from typing import Callable

COM_PORTS = {1: (0x3F8, 4), 2: (0x2F8, 3), 3: (0x3E8, 4), 4: (0x2E8, 3)}

IER_RX, IER_THRE, IER_LSR, IER_MSR = 1, 2, 4, 8
IIR_NONE, IIR_MSR, IIR_THRE, IIR_RX, IIR_LSR, IIR_TIMEOUT = 1, 0x00, 0x02, 0x04, 0x06, 0x0C
IIR_FIFO = 0xC0
LCR_DLAB = 0x80
MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 1, 2, 4, 8, 0x10
LSR_DR, LSR_OE, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x20, 0x40
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
FCR_ENABLE, FCR_CLEAR_RX = 0x01, 0x02
RX_LIMIT = 4096      # bytes held for the guest; more is an overrun


class Uart16550:
    name = "serial"

    def __init__(self, irq: Callable[[bool], None] = lambda level: None,
                 output: Callable[[bytes], None] = lambda data: None):
        self.irq = irq
        self.output = output
        self.rx: deque[int] = deque()
        self._line = False
        self.reset()

    def reset(self) -> None:
        self.divisor = 12          # 9600 baud
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.lsr = LSR_THRE | LSR_TEMT
        self.scr = 0
        self.fcr = 0
        self.thre_pending = False   # the THR-empty interrupt, until IIR is read or THR written
        self.rx.clear()
        self._update()

    # -- host side -------------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Bytes arriving on the wire (typed at the console)."""
        if self.mcr & MCR_LOOP:
            return
        for byte in data:
            if len(self.rx) >= RX_LIMIT:
                self.lsr |= LSR_OE
                break
            self.rx.append(byte)
        self._update()

    # -- guest side ------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            if self.lcr & LCR_DLAB:
                return self.divisor & 0xFF
            value = self.rx.popleft() if self.rx else 0
            self._update()
            return value
        if offset == 1:
            return self.divisor >> 8 if self.lcr & LCR_DLAB else self.ier
        if offset == 2:
            cause = self._cause()
            if cause == IIR_THRE:
                self.thre_pending = False
                self._update()
            return cause | (IIR_FIFO if self.fcr & FCR_ENABLE else 0)
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            value = self.lsr | (LSR_DR if self.rx else 0)
            self.lsr &= ~LSR_OE
            self._update()
            return value
        if offset == 6:
            if self.mcr & MCR_LOOP:    # modem inputs wired to the outputs
                m = self.mcr
                return ((MSR_CTS if m & MCR_RTS else 0) | (MSR_DSR if m & MCR_DTR else 0)
                        | (MSR_RI if m & MCR_OUT1 else 0) | (MSR_DCD if m & MCR_OUT2 else 0))
            return MSR_CTS | MSR_DSR | MSR_DCD       # a terminal is always there
        return self.scr

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0xFF00) | value
                return
            if self.mcr & MCR_LOOP:
                if len(self.rx) < RX_LIMIT:
                    self.rx.append(value)
            else:
                self.output(bytes((value,)))
            self.thre_pending = True          # sent at once: THR is empty again
        elif offset == 1:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0xFF) | value << 8
                return
            newly_thre = value & IER_THRE and not self.ier & IER_THRE
            self.ier = value & 0x0F
            if newly_thre:
                self.thre_pending = True       # enabling THRE while empty interrupts at once
        elif offset == 2:
            self.fcr = value & 0xC9
            if value & FCR_CLEAR_RX:
                self.rx.clear()
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value & 0x1F
        elif offset == 7:
            self.scr = value
        self._update()

    def write_string(self, offset: int, size: int, data: bytes) -> None:
        if offset == 0 and not self.lcr & LCR_DLAB and not self.mcr & MCR_LOOP:
            self.output(bytes(data[::size]))
            self.thre_pending = True
            self._update()
        else:
            for byte in data[::size]:
                self.write(offset, 1, byte)

    # -- interrupt logic -------------------------------------------------------------------------
    def _cause(self) -> int:
        if self.ier & IER_LSR and self.lsr & LSR_OE:
            return IIR_LSR
        if self.ier & IER_RX and self.rx:
            return IIR_RX
        if self.ier & IER_THRE and self.thre_pending:
            return IIR_THRE
        return IIR_NONE

    def _update(self) -> None:
        line = self._cause() != IIR_NONE and bool(self.mcr & MCR_OUT2)
        if line != self._line:
            self._line = line
            self.irq(line)

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"divisor": self.divisor, "ier": self.ier, "lcr": self.lcr, "mcr": self.mcr,
                "lsr": self.lsr, "scr": self.scr, "fcr": self.fcr, "thre_pending": self.thre_pending,
                "rx": bytes(self.rx), "line": self._line}

    def restore(self, state: dict) -> None:
        for key in ("divisor", "ier", "lcr", "mcr", "lsr", "scr", "fcr", "thre_pending"):
            setattr(self, key, state[key])
        self.rx = deque(state["rx"])
        self._line = state["line"]
