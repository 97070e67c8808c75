"""The 8259A programmable interrupt controller pair of a PC (master at 0x20, slave at 0xA0 on IRQ2).

Sans-I/O: lines go in through set_irq(), INTR is the `intr` attribute, INTA is acknowledge()."""

from __future__ import annotations

_FIELDS = ("irr", "isr", "imr", "lines", "elcr", "base", "priority_add", "read_isr", "poll",
           "special_mask", "init_step", "need_icw4", "single", "auto_eoi", "rotate_auto_eoi",
           "fully_nested")


class Pic8259:
    """One 8259A: request, in-service and mask registers, priority rotation, the init sequence."""

    __slots__ = _FIELDS + ("elcr_mask", "is_master")

    def __init__(self, is_master: bool, elcr_mask: int):
        self.is_master = is_master
        self.elcr_mask = elcr_mask
        self.reset()

    def reset(self) -> None:
        self.lines = 0
        self.elcr = 0
        self._init_reset()

    def _init_reset(self) -> None:
        # ICW1 resets the edge-sense latches: an edge line that is already high must fall and rise
        # again, so `lines` is kept, and only level requests still asserted stay requested.
        self.irr = self.lines & self.elcr
        self.isr = self.imr = 0
        self.base = self.priority_add = 0
        self.read_isr = self.poll = self.special_mask = 0
        self.init_step = self.need_icw4 = self.single = 0
        self.auto_eoi = self.rotate_auto_eoi = self.fully_nested = 0

    # -- priority ----------------------------------------------------------------------------
    def _highest(self, mask: int) -> int:
        """The highest-priority IR in `mask` given the current rotation, or -1."""
        pa = self.priority_add
        r = ((mask >> pa) | (mask << (8 - pa))) & 0xFF
        if not r:
            return -1
        return ((r & -r).bit_length() - 1 + pa) & 7

    def pending(self) -> int:
        """The IR this chip would signal on INT now, or -1."""
        req = self.irr & ~self.imr
        if not req:
            return -1
        irq = self._highest(req)
        service = self.isr
        if self.special_mask:
            service &= ~self.imr
        if self.fully_nested and self.is_master:
            # a slave in service must not block its own higher-priority requests
            service &= ~4
        if service:
            pa = self.priority_add
            if ((irq - pa) & 7) >= ((self._highest(service) - pa) & 7):
                return -1
        return irq

    def ack(self, irq: int) -> None:
        bit = 1 << irq
        if not self.elcr & bit:
            self.irr &= ~bit
        if self.auto_eoi:
            if self.rotate_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= bit

    def set_line(self, n: int, level: bool) -> None:
        bit = 1 << n
        if level:
            if self.elcr & bit or not self.lines & bit:
                self.irr |= bit
            self.lines |= bit
        else:
            if self.elcr & bit:
                self.irr &= ~bit
            self.lines &= ~bit

    def set_elcr(self, value: int) -> None:
        self.elcr = value & self.elcr_mask
        # a line that becomes level-triggered is requested exactly while it is asserted
        self.irr = (self.irr & ~self.elcr) | (self.lines & self.elcr)

    # -- registers ---------------------------------------------------------------------------
    def write(self, odd: int, value: int) -> None:
        if not odd:
            if value & 0x10:                       # ICW1
                self._init_reset()
                self.init_step = 1
                self.need_icw4 = value & 1
                self.single = (value >> 1) & 1
            elif value & 0x08:                     # OCW3
                if value & 0x04:
                    self.poll = 1
                if value & 0x02:
                    self.read_isr = value & 1
                if value & 0x40:
                    self.special_mask = (value >> 5) & 1
            else:                                  # OCW2
                cmd = value >> 5
                if cmd in (0, 4):
                    self.rotate_auto_eoi = cmd >> 2
                elif cmd in (1, 5):                # non-specific EOI (and rotate)
                    irq = self._highest(self.isr)
                    if irq >= 0:
                        self.isr &= ~(1 << irq)
                        if cmd == 5:
                            self.priority_add = (irq + 1) & 7
                elif cmd in (3, 7):                # specific EOI (and rotate)
                    irq = value & 7
                    self.isr &= ~(1 << irq)
                    if cmd == 7:
                        self.priority_add = (irq + 1) & 7
                elif cmd == 6:                     # set priority: IR n becomes the lowest
                    self.priority_add = (value + 1) & 7
            return
        step = self.init_step
        if step == 0:
            self.imr = value
        elif step == 1:
            self.base = value & 0xF8
            self.init_step = (3 if self.need_icw4 else 0) if self.single else 2
        elif step == 2:                            # ICW3: the cascade wiring is fixed on a PC
            self.init_step = 3 if self.need_icw4 else 0
        else:                                      # ICW4 (8086 mode assumed)
            self.auto_eoi = (value >> 1) & 1
            self.fully_nested = (value >> 4) & 1
            self.init_step = 0

    def read(self, odd: int) -> int:
        if self.poll:
            self.poll = 0
            irq = self.pending()
            if irq < 0:
                return 0
            self.ack(irq)
            return 0x80 | irq
        if odd:
            return self.imr
        return self.isr if self.read_isr else self.irr

    def snapshot(self) -> dict:
        return {name: getattr(self, name) for name in _FIELDS}

    def restore(self, state: dict) -> None:
        for name in _FIELDS:
            setattr(self, name, int(state[name]))


class DualPic:
    """Master and slave 8259A with the slave's INT on the master's IR2, plus the PIIX ELCR pair."""

    __slots__ = ("master", "slave", "intr")

    def __init__(self):
        # IRQ0-2 and IRQ8/13 cannot be level-triggered on PIIX
        self.master = Pic8259(True, 0xF8)
        self.slave = Pic8259(False, 0xDE)
        self.intr = False

    def reset(self) -> None:
        self.master.reset()
        self.slave.reset()
        self._update()

    def _update(self) -> None:
        master = self.master
        master.set_line(2, self.slave.pending() >= 0)
        self.intr = master.pending() >= 0

    def set_irq(self, irq: int, level: bool) -> None:
        chip = self.master if irq < 8 else self.slave
        bit = 1 << (irq & 7)
        if bool(chip.lines & bit) == bool(level):
            return                                 # no edge, and a level request already mirrors the line
        chip.set_line(irq & 7, level)
        self._update()

    def acknowledge(self) -> int:
        """The INTA cycle: the vector to take (IRQ7/IRQ15 spurious vectors when nothing is left)."""
        master = self.master
        irq = master.pending()
        if irq < 0:
            return master.base + 7
        master.ack(irq)
        if irq == 2 and not master.single:
            slave = self.slave
            sirq = slave.pending()
            if sirq < 0:
                vector = slave.base + 7
            else:
                slave.ack(sirq)
                vector = slave.base + sirq
            # INTA drops the slave's INT; if it still has a request it raises a fresh edge on IR2
            master.lines &= ~4
        else:
            vector = master.base + irq
        self._update()
        return vector

    def read(self, port: int) -> int:
        if port == 0x4D0:
            return self.master.elcr
        if port == 0x4D1:
            return self.slave.elcr
        chip = self.master if port < 0xA0 else self.slave
        if chip.poll:                              # a poll read is an INTA without the vector
            value = chip.read(port & 1)
            self._update()
            return value
        return chip.read(port & 1)

    def write(self, port: int, value: int) -> None:
        if port == 0x4D0:
            self.master.set_elcr(value)
        elif port == 0x4D1:
            self.slave.set_elcr(value)
        else:
            (self.master if port < 0xA0 else self.slave).write(port & 1, value & 0xFF)
        self._update()

    def snapshot(self) -> dict:
        return {"master": self.master.snapshot(), "slave": self.slave.snapshot()}

    def restore(self, state: dict) -> None:
        self.master.restore(state["master"])
        self.slave.restore(state["slave"])
        self._update()
