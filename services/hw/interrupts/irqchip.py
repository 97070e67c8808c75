"""The PC interrupt controllers and timers of the software accelerator, wired like QEMU's pc machine.

ISA IRQ n reaches the 8259 pair and IO-APIC pin n, except the PIT's IRQ0, on pin 2 (irq0-override)."""

from __future__ import annotations

from services.hw.interrupts.ioapic import IOAPIC_DEFAULT_BASE, PINS, IoApic
from services.hw.interrupts.lapic import (
    APIC_DEFAULT_BASE,
    DM_LOWEST,
    MSR_ENABLE,
    LocalApic,
)
from services.hw.interrupts.pic import DualPic
from services.hw.interrupts.pit import Pit

SNAPSHOT_VERSION = 1
_PIC_PORTS = frozenset((0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1))
_PIT_PORTS = frozenset((0x40, 0x41, 0x42, 0x43))


class InterruptChip:
    """What the CPU engine talks to: port and MMIO decode, timers, the INTR/INTA handshake."""

    def __init__(self, cpus: int = 1):
        self.pic = DualPic()
        self.pit = Pit(self._pit_irq0)
        self.ioapic = IoApic(self._apic_bus)
        self.lapics = [LocalApic(i, bsp=(i == 0), ipi_sink=self._ipi, eoi_sink=self.ioapic.eoi)
                       for i in range(cpus)]
        self.lapic_base = APIC_DEFAULT_BASE
        self.ioapic_base = IOAPIC_DEFAULT_BASE

    def reset(self) -> None:
        self.pic.reset()
        self.pit.reset()
        self.ioapic.reset()
        for lapic in self.lapics:
            lapic.reset()
        self.lapic_base = APIC_DEFAULT_BASE

    # -- interrupt lines ---------------------------------------------------------------------
    def set_irq(self, gsi: int, level: bool) -> None:
        """Drive an ISA IRQ (0-15, to the 8259 and the IO-APIC) or a PCI GSI (16-23, IO-APIC only)."""
        if gsi < 16:
            if gsi == 2:
                return                            # the cascade: nothing on the ISA bus drives it
            self.pic.set_irq(gsi, level)
            self.ioapic.set_irq(2 if gsi == 0 else gsi, level)
        elif gsi < PINS:
            self.ioapic.set_irq(gsi, level)

    def _pit_irq0(self) -> None:
        # a rising edge of OUT0: both controllers see IRQ0 as edge-triggered
        pic, ioapic = self.pic, self.ioapic
        pic.set_irq(0, True)
        pic.set_irq(0, False)
        ioapic.set_irq(2, True)
        ioapic.set_irq(2, False)

    def _apic_bus(self, dest: int, logical: bool, mode: int, vector: int, level: bool) -> None:
        """An interrupt message from the IO-APIC to the local APIC(s) it addresses."""
        targets = [lapic for lapic in self.lapics if lapic.matches(dest, logical)]
        if not targets:
            return
        if mode == DM_LOWEST and len(targets) > 1:
            targets = [min(targets, key=lambda lapic: lapic.tpr)]
        for lapic in targets:
            lapic.deliver(mode, vector, level)

    def _ipi(self, sender: LocalApic, icr_lo: int, dest: int) -> None:
        shorthand = (icr_lo >> 18) & 3
        if shorthand == 1:
            targets = [sender]
        elif shorthand == 2:
            targets = self.lapics
        elif shorthand == 3:
            targets = [lapic for lapic in self.lapics if lapic is not sender]
        else:
            logical = bool(icr_lo & 0x800)
            targets = [lapic for lapic in self.lapics if lapic.matches(dest, logical)]
            if (icr_lo >> 8) & 7 == DM_LOWEST and len(targets) > 1:
                targets = [min(targets, key=lambda lapic: lapic.tpr)]
        for lapic in targets:
            lapic.receive_ipi(icr_lo)

    # -- the processor side ------------------------------------------------------------------
    def interrupt_pending(self, cpu: int = 0) -> bool:
        """Whether an external interrupt waits for processor `cpu` (whatever its IF flag says)."""
        lapic = self.lapics[cpu]
        if lapic.irr and lapic.has_interrupt():
            return True
        return cpu == 0 and self.pic.intr and lapic.accepts_pic()

    def acknowledge(self, cpu: int = 0) -> int | None:
        """The INTA cycle: the vector to deliver, or None if the request went away."""
        lapic = self.lapics[cpu]
        vector = lapic.acknowledge()
        if vector is not None:
            return vector
        if cpu == 0 and self.pic.intr and lapic.accepts_pic():
            lapic.extint_pending = 0
            return self.pic.acknowledge()
        return None

    def nmi_pending(self, cpu: int = 0) -> bool:
        return bool(self.lapics[cpu].nmi_pending)

    def take_nmi(self, cpu: int = 0) -> bool:
        """Whether an NMI was delivered to processor `cpu` since the last call."""
        return self.lapics[cpu].take_nmi()

    @property
    def apic_base_msr(self) -> int:
        return self.lapics[0].base_msr

    @apic_base_msr.setter
    def apic_base_msr(self, value: int) -> None:
        self.write_apic_base_msr(0, value)

    def write_apic_base_msr(self, cpu: int, value: int, now: int | None = None) -> None:
        lapic = self.lapics[cpu]
        lapic.write_base_msr(value, now)
        if cpu == 0:
            self.lapic_base = lapic.base

    # -- timers ------------------------------------------------------------------------------
    def advance(self, now: int) -> None:
        """Fire the timers that expired by `now` (ns, the clock every `now` here comes from)."""
        pit = self.pit
        if pit.deadline is not None and now >= pit.deadline:
            pit.advance(now)
        for lapic in self.lapics:
            if lapic.timer_deadline is not None and now >= lapic.timer_deadline:
                lapic.advance(now)

    def next_deadline(self) -> int | None:
        """The earliest ns time at which advance() has something to do, or None."""
        best = self.pit.deadline
        for lapic in self.lapics:
            d = lapic.timer_deadline
            if d is not None and (best is None or d < best):
                best = d
        return best

    # -- port I/O ----------------------------------------------------------------------------
    def pio_read(self, port: int, size: int, now: int) -> int | None:
        """The value of a port this chip owns, or None so the engine asks the device bus."""
        if size != 1:
            if port not in _PIC_PORTS and port not in _PIT_PORTS and port != 0x61:
                return None
            value = 0
            for i in range(size):
                byte = self.pio_read(port + i, 1, now)
                value |= (0xFF if byte is None else byte) << (8 * i)
            return value
        if port in _PIC_PORTS:
            return self.pic.read(port)
        if port in _PIT_PORTS:
            return self.pit.read(port, now)
        if port == 0x61:
            return self.pit.read_port61(now)
        return None

    def pio_write(self, port: int, size: int, value: int, now: int) -> bool:
        """Handle a write to a port this chip owns; False means it belongs to the device bus."""
        if size != 1:
            if port not in _PIC_PORTS and port not in _PIT_PORTS and port != 0x61:
                return False
            for i in range(size):
                self.pio_write(port + i, 1, (value >> (8 * i)) & 0xFF, now)
            return True
        if port in _PIC_PORTS:
            self.pic.write(port, value)
            return True
        if port in _PIT_PORTS:
            self.pit.write(port, value, now)
            return True
        if port == 0x61:
            self.pit.write_port61(value, now)
            return True
        return False

    # -- MMIO --------------------------------------------------------------------------------
    def mmio_read(self, addr: int, size: int, now: int, cpu: int = 0) -> int | None:
        """A read of the LAPIC (of processor `cpu`) or IO-APIC page, or None when `addr` is not theirs."""
        page = addr & ~0xFFF
        offset = addr & 0xFFF
        shift = (offset & 3) << 3
        mask = (1 << (8 * size)) - 1
        lapic = self.lapics[cpu]
        if page == lapic.base_msr & 0xFFFFF000 and lapic.base_msr & MSR_ENABLE:
            value = lapic.read(offset & ~0xF, now) if offset & 0xC == 0 else 0
            return (value >> shift) & mask
        if page == self.ioapic_base:
            value = self.ioapic.read(offset & ~3) if offset & 0xC == 0 else 0
            return (value >> shift) & mask
        return None

    def mmio_write(self, addr: int, size: int, value: int, now: int, cpu: int = 0) -> bool:
        """Handle a write to the LAPIC or IO-APIC page; False means `addr` belongs to the device bus."""
        page = addr & ~0xFFF
        offset = addr & 0xFFF
        lapic = self.lapics[cpu]
        if page == lapic.base_msr & 0xFFFFF000 and lapic.base_msr & MSR_ENABLE:
            # only aligned dword writes mean anything to the xAPIC register file
            if offset & 0xF == 0 and size >= 4:
                lapic.write(offset, value & 0xFFFFFFFF, now)
            return True
        if page == self.ioapic_base:
            if offset & 0xF == 0:
                self.ioapic.write(offset, value & 0xFFFFFFFF)
            return True
        return False

    # -- state -------------------------------------------------------------------------------
    def snapshot(self, now: int) -> dict:
        """Plain msgpack-able data; timers are stored relative to `now`."""
        return {"version": SNAPSHOT_VERSION, "pic": self.pic.snapshot(),
                "pit": self.pit.snapshot(now), "ioapic": self.ioapic.snapshot(),
                "lapics": [lapic.snapshot(now) for lapic in self.lapics]}

    def restore(self, state: dict, now: int) -> None:
        """Load a snapshot; timers continue from `now` with the time they had left."""
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"interrupt chip snapshot version {state.get('version')} "
                             f"is not {SNAPSHOT_VERSION}")
        if len(state["lapics"]) != len(self.lapics):
            raise ValueError(f"snapshot has {len(state['lapics'])} local APICs, "
                             f"this chip has {len(self.lapics)}")
        self.pic.restore(state["pic"])
        self.pit.restore(state["pit"], now)
        self.ioapic.restore(state["ioapic"])
        for lapic, ls in zip(self.lapics, state["lapics"]):
            lapic.restore(ls, now)
        self.lapic_base = self.lapics[0].base
