"""The PIIX south bridge functions a PC's firmware looks for: the PIIX3 ISA bridge (PCI interrupt
routing) at 00:01.0 and the PIIX4 power management function (ACPI registers, SCI) at 00:01.3."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from services.hw.chipset.pci import (
    COMMAND,
    HEADER_MULTIFUNCTION,
    INTERRUPT_LINE,
    STATUS,
    PciFunction,
)

log = logging.getLogger("headbox.devices.piix")

ISA_BRIDGE_SLOT, ISA_BRIDGE_FUNCTION, PM_FUNCTION = 1, 0, 3

# -- PIIX3 ISA bridge -----------------------------------------------------------------------------
PIRQ_ROUTE = 0x60                 # PIRQA-D route control, one byte each
PIRQ_DISABLED = 0x80
PIRQ_IRQ_MASK = 0x0F
_RESERVED_ISA_IRQS = frozenset((0, 1, 2, 8, 13))   # the datasheet forbids routing PIRQs there


def pirq_of(slot: int, pin: int) -> int:
    """Which PIRQ (0 = A ... 3 = D) INTx pin `pin` (1 = INTA ... 4 = INTD) of a bus-0 `slot` is
    wired to: the rotation the i440FX board and SeaBIOS's tables (`piix_pci_slot_get_irq`) use."""
    if not 1 <= pin <= 4:
        raise ValueError(f"PCI interrupt pin {pin} is not INTA-INTD (1-4)")
    return (pin - 1 + slot - 1) & 3


class Piix3IsaBridge(PciFunction):
    """00:01.0, 8086:7000, the multifunction device's function 0. The guest programs PIRQA-D to
    ISA IRQs at config 0x60-0x63 (bit 7 = disabled, the power-on state). `on_route_change(routes)`
    hears the four route bytes whenever they change, so the platform can re-steer asserted lines."""

    def __init__(self, on_route_change: Callable[[bytes], None] | None = None):
        super().__init__(0x8086, 0x7000, 0x060100, header_type=HEADER_MULTIFUNCTION)
        self._set(COMMAND, 2, 0x0007)       # an ISA bridge decodes from power-on
        self._set(STATUS, 2, 0x0200)        # medium DEVSEL timing
        self.config[PIRQ_ROUTE:PIRQ_ROUTE + 4] = bytes((PIRQ_DISABLED,) * 4)
        self.set_writable(PIRQ_ROUTE, 4, 0x8F8F8F8F)
        # Registers firmware and chipset drivers read back: ISA I/O recovery, X-bus chip select,
        # top of memory, misc status, motherboard IRQ/DMA routing, APIC base, SMI control.
        for offset, size, power_on in ((0x4C, 1, 0x4D), (0x4E, 1, 0x03), (0x4F, 1, 0x00),
                                       (0x69, 1, 0x02), (0x6A, 1, 0x00), (0x70, 1, 0x80),
                                       (0x76, 1, 0x0C), (0x77, 1, 0x0C), (0x78, 2, 0x0002),
                                       (0x80, 1, 0x00), (0x82, 1, 0x00), (0xA0, 1, 0x08),
                                       (0xA2, 2, 0x0000), (0xA4, 4, 0x00000000), (0xA8, 1, 0x0F),
                                       (0xAA, 2, 0x0000), (0xAC, 1, 0x00), (0xAE, 1, 0x00)):
            self._set(offset, size, power_on)
            self.set_writable(offset, size)
        self._power_on = bytes(self.config)
        self.on_route_change = on_route_change

    @property
    def routes(self) -> bytes:
        return bytes(self.config[PIRQ_ROUTE:PIRQ_ROUTE + 4])

    def pirq_irq(self, pirq: int) -> int | None:
        """The ISA IRQ PIRQ `pirq` (0-3) is steered to, or None while disabled or reserved."""
        route = self.config[PIRQ_ROUTE + (pirq & 3)]
        if route & PIRQ_DISABLED:
            return None
        irq = route & PIRQ_IRQ_MASK
        return None if irq in _RESERVED_ISA_IRQS else irq

    def pci_irq(self, slot: int, pin: int) -> int | None:
        """The ISA IRQ (= GSI) that INTx `pin` (1-4) of bus-0 device `slot` raises, or None."""
        return self.pirq_irq(pirq_of(slot, pin))

    def config_write(self, offset: int, size: int, value: int) -> None:
        before = self.routes
        super().config_write(offset, size, value)
        if self.on_route_change is not None and self.routes != before:
            self.on_route_change(self.routes)

    def reset(self) -> None:
        before = self.routes
        super().reset()
        if self.on_route_change is not None and self.routes != before:
            self.on_route_change(self.routes)

    def restore(self, state: dict) -> None:
        super().restore(state)
        if self.on_route_change is not None:
            self.on_route_change(self.routes)


# -- PIIX4 power management -----------------------------------------------------------------------
PMBA, PMREGMISC, DEVACTB, SMBBA, SMBHSTCFG = 0x40, 0x80, 0x58, 0x90, 0xD2
PMREGMISC_PMIOSE = 0x01
PM_IO_SIZE = 64
PMBA_MASK = 0xFFC0                 # 64-byte aligned I/O space below 64 KiB
SCI_IRQ = 9                        # hardwired; SeaBIOS's FADT and DSDT say so

PM1_STS, PM1_EN, PM1_CNT, PM_TMR = 0x00, 0x02, 0x04, 0x08
STS_TMR, STS_BM, STS_GBL, STS_PWRBTN, STS_RTC, STS_WAK = 0x0001, 0x0010, 0x0020, 0x0100, 0x0400, 0x8000
EN_TMR, EN_GBL, EN_PWRBTN, EN_RTC = 0x0001, 0x0020, 0x0100, 0x0400
CNT_SCI_EN, CNT_SLP_EN = 0x0001, 0x2000
CNT_SLP_TYP_SHIFT, CNT_SLP_TYP_MASK = 10, 0x1C00
STS_BITS = STS_TMR | STS_BM | STS_GBL | STS_PWRBTN | STS_RTC | STS_WAK
EN_BITS = EN_TMR | EN_GBL | EN_PWRBTN | EN_RTC
CNT_BITS = 0x1C07                  # SCI_EN, BM_RLD, GBL_RLS, SLP_TYP; SLP_EN reads as 0
SLP_TYP_S5, SLP_TYP_S3, SLP_TYP_S4 = 0, 1, 2   # the values of SeaBIOS's _S5, _S3 and _S4 packages

PM_TIMER_HZ = 3_579_545
PM_TIMER_MASK = 0xFFFFFF
_TIMER_CARRY_SHIFT = 23            # TMR_STS is set whenever bit 23 of the counter changes

APM_PORT = 0xB2                    # APMC; 0xB3 is APMS, a scratch byte
ACPI_ENABLE, ACPI_DISABLE = 0xF1, 0xF0
GPE0_PORT, GPE0_LENGTH = 0xAFE0, 4


class Piix4Pm(PciFunction):
    """00:01.3, 8086:7113: the ACPI PM1 register block and PM timer, decoded at the I/O base the
    guest writes to PMBA (0x40, bit 0 reads 1) while PMREGMISC (0x80) bit 0 is set.

    Moving the block: `on_io_move(old_base, new_base)` is called whenever the decoded base
    changes (a PMBA or PMREGMISC write, reset, restore); a base of None means not decoded. The
    platform answers ports [new_base, new_base + PM_IO_SIZE) with `pm_read`/`pm_write` (see
    platform.PioWindows). SeaBIOS puts it at 0xB000 once; guests leave it there.

    `irq(line, level)` drives the SCI (IRQ 9, level): high while SCI_EN and some enabled status
    bit (PM1 or GPE0) is set. `poweroff()` runs when the guest enters S5 (or S4);
    `suspend()` on S3 — without one the guest wakes at once (WAK_STS), as a VM cannot sleep here.
    `clock_ns()` paces the PM timer. Its TMR_STS is evaluated when the guest looks and on poll();
    no host timer raises a timer-carry SCI on its own (ACPI OSes do not enable TMR_EN)."""

    def __init__(self, *, irq: Callable[[int, bool], None] | None = None,
                 poweroff: Callable[[], None] | None = None, suspend: Callable[[], None] | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 on_io_move: Callable[[int | None, int | None], None] | None = None):
        super().__init__(0x8086, 0x7113, 0x068000, revision=0x03, interrupt_pin=1)
        self.config[INTERRUPT_LINE] = SCI_IRQ
        self._set(PMBA, 4, 0x00000001)
        self.set_writable(PMBA, 4, PMBA_MASK)
        self.set_writable(PMREGMISC, 1, PMREGMISC_PMIOSE)
        self._set(SMBBA, 4, 0x00000001)
        self.set_writable(SMBBA, 4, 0xFFF0)
        self.set_writable(SMBHSTCFG, 1, 0x0F)
        # DEVACTB's APMC_EN (bit 25) set from power-on tells SeaBIOS that SMM is already set up:
        # there is no SMM here, and its SMM init would wait forever for an SMI handler to answer.
        self.config[DEVACTB + 3] = 0x02
        self._power_on = bytes(self.config)
        self.irq = irq
        self.poweroff = poweroff
        self.suspend = suspend
        self.clock_ns = clock_ns
        self.on_io_move = on_io_move
        self.lock = threading.RLock()
        self.gpe0 = Gpe0Block(self)
        self.io_base: int | None = None
        self.sci = False
        self._timer_origin = clock_ns()   # the counter is 0 here
        self._reset_registers()

    def _reset_registers(self) -> None:
        self.sts = 0
        self.en = 0
        self.cnt = 0
        self._timer_carries_seen = self._ticks() >> _TIMER_CARRY_SHIFT

    # -- configuration space ---------------------------------------------------------------------
    def config_write(self, offset: int, size: int, value: int) -> None:
        with self.lock:
            super().config_write(offset, size, value)
            self._remap()

    def _decoded_base(self) -> int | None:
        if not self.config[PMREGMISC] & PMREGMISC_PMIOSE:
            return None
        base = int.from_bytes(self.config[PMBA:PMBA + 4], "little") & PMBA_MASK
        return base or None

    def _remap(self) -> None:
        new = self._decoded_base()
        if new != self.io_base:
            old, self.io_base = self.io_base, new
            if self.on_io_move is not None:
                self.on_io_move(old, new)

    # -- PM timer --------------------------------------------------------------------------------
    def _ticks(self) -> int:
        return (self.clock_ns() - self._timer_origin) * PM_TIMER_HZ // 1_000_000_000

    @property
    def timer(self) -> int:
        return self._ticks() & PM_TIMER_MASK

    def _sync_timer_status(self) -> None:
        carries = self._ticks() >> _TIMER_CARRY_SHIFT
        if carries != self._timer_carries_seen:
            self._timer_carries_seen = carries
            self.sts |= STS_TMR

    # -- PM1 register block (offsets from the decoded base) -------------------------------------
    def pm_read(self, offset: int, size: int) -> int:
        with self.lock:
            if offset < PM_TMR + 4 and offset + size > PM1_STS:
                self._sync_timer_status()
                self._update_sci()
            value = 0
            registers = self._register_bytes(offset, size)
            for i in range(size):
                value |= registers.get(offset + i, 0) << (8 * i)
            return value

    def _register_bytes(self, offset: int, size: int) -> dict[int, int]:
        regs = {PM1_STS: self.sts, PM1_EN: self.en, PM1_CNT: self.cnt}
        out = {}
        for base, reg in regs.items():
            out[base], out[base + 1] = reg & 0xFF, reg >> 8
        if offset + size > PM_TMR and offset < PM_TMR + 4:
            timer = self.timer
            for i in range(4):
                out[PM_TMR + i] = (timer >> (8 * i)) & 0xFF
        return out

    def pm_write(self, offset: int, size: int, value: int) -> None:
        with self.lock:
            # A wide access may span registers (a dword write to PM1a_EVT sets STS and EN).
            written = {offset + i: (value >> (8 * i)) & 0xFF for i in range(size)}

            def part(base: int) -> tuple[int, int] | None:
                lo, hi = written.get(base), written.get(base + 1)
                if lo is None and hi is None:
                    return None
                mask = (0xFF if lo is not None else 0) | (0xFF00 if hi is not None else 0)
                return ((lo or 0) | (hi or 0) << 8), mask

            if (p := part(PM1_STS)) is not None:
                self._sync_timer_status()
                self.sts &= ~(p[0] & p[1] & STS_BITS)       # write 1 to clear
            if (p := part(PM1_EN)) is not None:
                self.en = ((self.en & ~p[1]) | (p[0] & p[1])) & EN_BITS
            if (p := part(PM1_CNT)) is not None:
                self.cnt = ((self.cnt & ~p[1]) | (p[0] & p[1])) & CNT_BITS
                if p[0] & p[1] & CNT_SLP_EN:
                    self._sleep((self.cnt & CNT_SLP_TYP_MASK) >> CNT_SLP_TYP_SHIFT)
            self._update_sci()

    def _sleep(self, slp_typ: int) -> None:
        if slp_typ in (SLP_TYP_S5, SLP_TYP_S4):
            log.info("the guest powers off (ACPI S%d)", 5 if slp_typ == SLP_TYP_S5 else 4)
            if self.poweroff is not None:
                self.poweroff()
        elif slp_typ == SLP_TYP_S3:
            if self.suspend is not None:
                self.suspend()
            else:
                log.info("the guest asked for S3, which this VM does not offer: it wakes at once")
            self.sts |= STS_WAK
        else:
            log.debug("ignoring ACPI sleep type %d", slp_typ)

    # -- events ----------------------------------------------------------------------------------
    def power_button(self) -> bool:
        """Press the power button. True when the guest has ACPI on and listens to the button
        (otherwise nothing happens until it does, as with a real button under a non-ACPI OS)."""
        with self.lock:
            self.sts |= STS_PWRBTN
            self._update_sci()
            return bool(self.cnt & CNT_SCI_EN and self.en & EN_PWRBTN)

    def apm_command(self, value: int) -> None:
        """A write to APMC (0xB2): SeaBIOS's FADT names 0xF1/0xF0 as ACPI_ENABLE/ACPI_DISABLE,
        which the SMI handler of a real board carries out by flipping SCI_EN."""
        with self.lock:
            if value == ACPI_ENABLE:
                self.cnt |= CNT_SCI_EN
            elif value == ACPI_DISABLE:
                self.cnt &= ~CNT_SCI_EN
            self._update_sci()

    def poll(self) -> None:
        """Re-evaluate time-driven status (TMR_STS) and the SCI line."""
        with self.lock:
            self._sync_timer_status()
            self._update_sci()

    def _update_sci(self) -> None:
        pending = (self.sts & self.en & EN_BITS) or (self.gpe0.sts & self.gpe0.en)
        level = bool(self.cnt & CNT_SCI_EN) and bool(pending)
        if level != self.sci:
            self.sci = level
            if self.irq is not None:
                self.irq(SCI_IRQ, level)

    # -- platform --------------------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            super().reset()
            self._reset_registers()
            self._update_sci()
            self._remap()

    def snapshot(self) -> dict:
        with self.lock:
            self._sync_timer_status()
            return {**super().snapshot(), "sts": self.sts, "en": self.en, "cnt": self.cnt,
                    "ticks": self._ticks(), "timer_carries_seen": self._timer_carries_seen,
                    "sci": self.sci}

    def restore(self, state: dict) -> None:
        with self.lock:
            super().restore(state)
            self.sts = int(state["sts"]) & STS_BITS
            self.en = int(state["en"]) & EN_BITS
            self.cnt = int(state["cnt"]) & CNT_BITS
            # The counter continues from the saved count, whatever this host's clock reads.
            self._timer_origin = self.clock_ns() - int(state["ticks"]) * 1_000_000_000 // PM_TIMER_HZ
            self._timer_carries_seen = int(state["timer_carries_seen"])
            self.sci = bool(state["sci"])
            self._remap()


class Gpe0Block:
    """GPE0 at 0xAFE0: two status bytes (write 1 to clear) and two enable bytes. No event source
    is wired yet (hotplug would be one), but enabled and set bits count toward the PM's SCI.
    A device of its own on the bus (fixed port, own snapshot); it shares the PM function's lock."""

    name = "gpe0"

    def __init__(self, pm: Piix4Pm):
        self.pm = pm
        self.sts = 0
        self.en = 0

    def read(self, offset: int, size: int) -> int:
        with self.pm.lock:
            data = self.sts.to_bytes(2, "little") + self.en.to_bytes(2, "little")
            return int.from_bytes(data[offset:offset + size].ljust(size, b"\xff"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        with self.pm.lock:
            for i in range(size):
                at, byte = offset + i, (value >> (8 * i)) & 0xFF
                if at < 2:
                    self.sts &= ~(byte << (8 * at))
                elif at < 4:
                    shift = 8 * (at - 2)
                    self.en = (self.en & ~(0xFF << shift)) | byte << shift
            self.pm._update_sci()

    def reset(self) -> None:
        with self.pm.lock:
            self.sts = self.en = 0
            self.pm._update_sci()

    def snapshot(self) -> dict:
        return {"sts": self.sts, "en": self.en}

    def restore(self, state: dict) -> None:
        self.sts, self.en = int(state["sts"]) & 0xFFFF, int(state["en"]) & 0xFFFF


class ApmControl:
    """Ports 0xB2 (APMC) and 0xB3 (APMS). APMC writes reach the PM function (ACPI enable and
    disable); APMS is a scratch byte firmware uses to talk to its SMI handler."""

    name = "apm"

    def __init__(self, pm: Piix4Pm):
        self.pm = pm
        self.apmc = 0
        self.apms = 0

    def read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):
            value |= (self.apmc if offset + i == 0 else self.apms if offset + i == 1 else 0xFF) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            byte = (value >> (8 * i)) & 0xFF
            if offset + i == 0:
                self.apmc = byte
                self.pm.apm_command(byte)
            elif offset + i == 1:
                self.apms = byte

    def reset(self) -> None:
        self.apmc = self.apms = 0

    def snapshot(self) -> dict:
        return {"apmc": self.apmc, "apms": self.apms}

    def restore(self, state: dict) -> None:
        self.apmc, self.apms = int(state["apmc"]) & 0xFF, int(state["apms"]) & 0xFF
