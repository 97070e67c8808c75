"""The local APIC of one processor (xAPIC, MMIO page at IA32_APIC_BASE, 0xFEE00000 by default).

Sans-I/O: the timer counts at 1 GHz / divide from the `now` (ns) given; IPIs and EOIs leave by callback."""

from __future__ import annotations

from typing import Callable

APIC_DEFAULT_BASE = 0xFEE00000
APIC_VERSION = 0x50014           # integrated APIC, 6 LVT entries (max LVT index 5)
MSR_BSP = 1 << 8
MSR_ENABLE = 1 << 11

LVT_MASKED = 1 << 16
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = range(6)
DM_FIXED, DM_LOWEST, DM_SMI, DM_NMI, DM_INIT, DM_SIPI, DM_EXTINT = 0, 1, 2, 4, 5, 6, 7

# writable bits of each LVT entry (timer has its mode bits, LINTs polarity and trigger mode)
_LVT_WRITABLE = (0x70000 | 0xFF, 0x10700 | 0xFF, 0x10700 | 0xFF, 0x1A700 | 0xFF,
                 0x1A700 | 0xFF, 0x10000 | 0xFF)

_FIELDS = ("apic_id", "base_msr", "tpr", "ldr", "dfr", "svr", "isr", "irr", "tmr", "esr",
           "esr_pending", "icr_lo", "icr_hi", "lvt", "initial_count", "divide_config",
           "nmi_pending", "extint_pending", "init_pending", "sipi_vector")


def _divide_shift(dcr: int) -> int:
    """log2 of the timer divisor encoded in the divide configuration register."""
    return (((dcr & 3) | ((dcr >> 1) & 4)) + 1) & 7


class LocalApic:
    """One xAPIC. IRR/ISR/TMR are 256-bit ints; the highest vector is bit_length() - 1."""

    __slots__ = _FIELDS + ("timer_start", "timer_deadline", "divide_shift", "ipi_sink",
                           "eoi_sink")

    def __init__(self, apic_id: int = 0, bsp: bool = True,
                 ipi_sink: Callable[["LocalApic", int, int], None] | None = None,
                 eoi_sink: Callable[[int], None] | None = None):
        # ipi_sink(sender, icr_lo, destination) routes an IPI on the APIC bus; without one the
        # sender is alone and only IPIs aimed at itself arrive. eoi_sink(vector) reaches the IO-APICs.
        self.ipi_sink = ipi_sink
        self.eoi_sink = eoi_sink
        self.apic_id = apic_id
        self.base_msr = APIC_DEFAULT_BASE | MSR_ENABLE | (MSR_BSP if bsp else 0)
        self.reset()

    def reset(self) -> None:
        self.base_msr = APIC_DEFAULT_BASE | MSR_ENABLE | (self.base_msr & MSR_BSP)
        self.tpr = self.ldr = 0
        self.dfr = 0xFFFFFFFF
        self.svr = 0xFF
        self.isr = self.irr = self.tmr = 0
        self.esr = self.esr_pending = 0
        self.icr_lo = self.icr_hi = 0
        self.lvt = [LVT_MASKED] * 6
        if self.base_msr & MSR_BSP:
            # as QEMU does: the BSP's LINT0 starts as unmasked ExtINT (virtual wire to the 8259)
            self.lvt[LVT_LINT0] = DM_EXTINT << 8
        self.initial_count = 0
        self.divide_config = 0
        self.divide_shift = 1
        self.timer_start = None
        self.timer_deadline = None
        self.nmi_pending = self.extint_pending = self.init_pending = 0
        self.sipi_vector = -1

    # -- state of the APIC as a whole --------------------------------------------------------
    @property
    def hw_enabled(self) -> bool:
        return bool(self.base_msr & MSR_ENABLE)

    @property
    def sw_enabled(self) -> bool:
        return bool(self.base_msr & MSR_ENABLE) and bool(self.svr & 0x100)

    @property
    def base(self) -> int:
        return self.base_msr & 0xFFFFF000

    def write_base_msr(self, value: int, now: int | None = None) -> None:
        # once globally disabled the APIC stays off until reset (the CPUID APIC flag is gone)
        enable = value & self.base_msr & MSR_ENABLE
        self.base_msr = (value & 0xFFFFFF000) | (self.base_msr & MSR_BSP) | enable
        if not enable:
            self.svr &= ~0x100
            self._software_disable(now)

    def accepts_pic(self) -> bool:
        """Whether the 8259's INTR reaches the processor: directly when this APIC is off, otherwise
        through LINT0 in ExtINT mode (virtual wire), or through an ExtINT message."""
        if not (self.base_msr & MSR_ENABLE and self.svr & 0x100):
            return True
        lint0 = self.lvt[LVT_LINT0]
        return (not lint0 & LVT_MASKED and (lint0 >> 8) & 7 == DM_EXTINT) or bool(self.extint_pending)

    # -- interrupt acceptance and dispatch ---------------------------------------------------
    def ppr(self) -> int:
        isr = self.isr
        isrv = isr.bit_length() - 1 if isr else 0
        tpr = self.tpr
        return tpr if (tpr & 0xF0) >= (isrv & 0xF0) else isrv & 0xF0

    def has_interrupt(self) -> bool:
        """A fixed/lowest-priority vector in IRR beats the processor priority."""
        irr = self.irr
        if not irr or not self.svr & 0x100 or not self.base_msr & MSR_ENABLE:
            return False
        return ((irr.bit_length() - 1) >> 4) > (self.ppr() >> 4)

    def acknowledge(self) -> int | None:
        if not self.has_interrupt():
            return None
        vector = self.irr.bit_length() - 1
        bit = 1 << vector
        self.irr &= ~bit
        self.isr |= bit
        return vector

    def deliver(self, mode: int, vector: int, level: bool = False) -> None:
        """An interrupt message arriving at this APIC (from the IO-APIC, an IPI or a local source)."""
        if not self.base_msr & MSR_ENABLE:
            return
        if mode <= DM_LOWEST:
            if not self.svr & 0x100:
                return
            if vector < 16:
                self._error(0x40)                 # received illegal vector
                return
            bit = 1 << vector
            self.irr |= bit
            if level:
                self.tmr |= bit
            else:
                self.tmr &= ~bit
        elif mode == DM_NMI:
            self.nmi_pending = 1
        elif mode == DM_EXTINT:
            self.extint_pending = 1
        elif mode == DM_INIT:
            self.init_pending = 1
        elif mode == DM_SIPI:
            self.sipi_vector = vector

    def _error(self, bits: int) -> None:
        self.esr_pending |= bits
        lvt = self.lvt[LVT_ERROR]
        if not lvt & LVT_MASKED:
            self.deliver(DM_FIXED, lvt & 0xFF)

    def _eoi(self) -> None:
        isr = self.isr
        if not isr:
            return
        vector = isr.bit_length() - 1
        bit = 1 << vector
        self.isr = isr & ~bit
        if self.tmr & bit and self.eoi_sink is not None:
            self.eoi_sink(vector)

    def matches(self, dest: int, logical: bool) -> bool:
        """Whether this APIC is addressed by an 8-bit xAPIC destination."""
        if not logical:
            return dest == 0xFF or dest == self.apic_id
        if dest == 0xFF:
            return True
        ldr = self.ldr >> 24
        if self.dfr >> 28 == 0xF:                  # flat model: one bit per APIC
            return bool(ldr & dest)
        return (dest >> 4) == (ldr >> 4) and bool(dest & ldr & 0xF)

    def _send_ipi(self) -> None:
        lo = self.icr_lo
        mode = (lo >> 8) & 7
        if mode <= DM_LOWEST and (lo & 0xFF) < 16:
            self._error(0x20)                     # send illegal vector
            return
        if self.ipi_sink is not None:
            self.ipi_sink(self, lo, self.icr_hi >> 24)
            return
        shorthand = (lo >> 18) & 3
        if shorthand == 3 or (shorthand == 0 and not self.matches(self.icr_hi >> 24, bool(lo & 0x800))):
            return
        self.receive_ipi(lo)

    def receive_ipi(self, icr_lo: int) -> None:
        mode = (icr_lo >> 8) & 7
        if mode == DM_INIT and icr_lo & 0x8000 and not icr_lo & 0x4000:
            return                                # INIT level de-assert only syncs arbitration IDs
        self.deliver(mode, icr_lo & 0xFF, bool(icr_lo & 0x8000) and mode <= DM_LOWEST)

    def set_lint(self, pin: int, level: bool) -> None:
        """An edge on LINT0/LINT1 delivered per its LVT entry (ExtINT is polled via accepts_pic)."""
        lvt = self.lvt[LVT_LINT0 + pin]
        if not level or lvt & LVT_MASKED:
            return
        mode = (lvt >> 8) & 7
        if mode != DM_EXTINT:
            self.deliver(mode, lvt & 0xFF, bool(lvt & 0x8000) and mode == DM_FIXED)

    def take_nmi(self) -> bool:
        pending = self.nmi_pending
        self.nmi_pending = 0
        return bool(pending)

    # -- timer -------------------------------------------------------------------------------
    def _period(self) -> int:
        return self.initial_count << self.divide_shift

    def advance(self, now: int) -> None:
        """Fire the timer if it expired by `now`; a periodic timer that fell behind fires once."""
        deadline = self.timer_deadline
        if deadline is None or now < deadline:
            return
        lvt = self.lvt[LVT_TIMER]
        if lvt & 0x20000:
            period = self._period()
            self.timer_deadline = self.timer_start + ((now - self.timer_start) // period + 1) * period
        else:
            self.timer_deadline = None
        if not lvt & LVT_MASKED:
            self.deliver(DM_FIXED, lvt & 0xFF)

    def _rearm(self, now: int) -> None:
        start = self.timer_start
        lvt = self.lvt[LVT_TIMER]
        if start is None or (lvt >> 17) & 3 == 2 or lvt & LVT_MASKED:
            # a masked timer keeps counting (current count is computed) but has nothing to fire
            self.timer_deadline = None
            return
        period = self._period()
        if lvt & 0x20000:
            self.timer_deadline = start + ((now - start) // period + 1) * period
        else:
            end = start + period
            self.timer_deadline = end if end > now else None

    def current_count(self, now: int) -> int:
        start = self.timer_start
        if start is None:
            return 0
        ticks = (now - start) >> self.divide_shift
        count = self.initial_count
        if self.lvt[LVT_TIMER] & 0x20000:
            return count - ticks % count
        return count - ticks if ticks < count else 0

    # -- registers ---------------------------------------------------------------------------
    def read(self, offset: int, now: int) -> int:
        """The 32-bit register at `offset` (16-byte aligned) of the APIC page."""
        reg = (offset >> 4) & 0xFF
        if reg == 0x02:
            return self.apic_id << 24
        if reg == 0x03:
            return APIC_VERSION
        if reg == 0x08:
            return self.tpr
        if reg == 0x0A:
            return self.ppr()
        if reg == 0x0D:
            return self.ldr
        if reg == 0x0E:
            return self.dfr
        if reg == 0x0F:
            return self.svr
        if 0x10 <= reg < 0x28:
            vec = (self.isr, self.tmr, self.irr)[(reg - 0x10) >> 3]
            return (vec >> ((reg & 7) << 5)) & 0xFFFFFFFF
        if reg == 0x28:
            return self.esr
        if reg == 0x30:
            return self.icr_lo
        if reg == 0x31:
            return self.icr_hi
        if 0x32 <= reg <= 0x37:
            return self.lvt[reg - 0x32]
        if reg == 0x38:
            return self.initial_count
        if reg == 0x39:
            return self.current_count(now)
        if reg == 0x3E:
            return self.divide_config
        return 0

    def write(self, offset: int, value: int, now: int) -> None:
        reg = (offset >> 4) & 0xFF
        value &= 0xFFFFFFFF
        if reg == 0x0B:
            self._eoi()
        elif reg == 0x08:
            self.tpr = value & 0xFF
        elif reg == 0x30:
            self.icr_lo = value & ~0x1000          # delivery is immediate: never "send pending"
            self._send_ipi()
        elif reg == 0x31:
            self.icr_hi = value & 0xFF000000
        elif reg == 0x02:
            self.apic_id = value >> 24
        elif reg == 0x0D:
            self.ldr = value & 0xFF000000
        elif reg == 0x0E:
            self.dfr = value | 0x0FFFFFFF
        elif reg == 0x0F:
            self.svr = value & 0x3FF               # vector, APIC enable, focus check
            if not value & 0x100:
                self._software_disable(now)
        elif reg == 0x28:
            self.esr, self.esr_pending = self.esr_pending, 0
        elif 0x32 <= reg <= 0x37:
            index = reg - 0x32
            if index == LVT_TIMER:
                self.advance(now)
            value &= _LVT_WRITABLE[index]
            if not self.svr & 0x100:
                value |= LVT_MASKED               # a software-disabled APIC keeps its LVTs masked
            self.lvt[index] = value
            if index == LVT_TIMER:
                self._rearm(now)
        elif reg == 0x38:
            self.advance(now)
            if (self.lvt[LVT_TIMER] >> 17) & 3 == 2:
                return                             # TSC-deadline mode ignores the initial count
            self.initial_count = value
            self.timer_start = now if value else None
            self._rearm(now)
        elif reg == 0x3E:
            self.advance(now)
            value &= 0xB
            # the count carries on from where it is, at the new rate
            start = self.timer_start
            if start is not None:
                shift = _divide_shift(value)
                ticks = (now - start) >> self.divide_shift
                if self.lvt[LVT_TIMER] & 0x20000:
                    ticks %= self.initial_count
                elif ticks >= self.initial_count:
                    ticks = self.initial_count
                self.timer_start = now - (ticks << shift)
            self.divide_config = value
            self.divide_shift = _divide_shift(value)
            self._rearm(now)

    def _software_disable(self, now: int | None) -> None:
        if now is not None:
            self.advance(now)
        for i in range(6):
            self.lvt[i] |= LVT_MASKED
        self.timer_deadline = None

    def snapshot(self, now: int) -> dict:
        state = {name: getattr(self, name) for name in _FIELDS}
        # 256-bit registers as 32-byte little-endian strings: msgpack ints stop at 64 bits
        for name in ("isr", "irr", "tmr"):
            state[name] = state[name].to_bytes(32, "little")
        state["lvt"] = list(self.lvt)
        state["timer_age"] = None if self.timer_start is None else now - self.timer_start
        state["deadline_in"] = None if self.timer_deadline is None else self.timer_deadline - now
        return state

    def restore(self, state: dict, now: int) -> None:
        for name in _FIELDS:
            value = state[name]
            if name in ("isr", "irr", "tmr"):
                value = int.from_bytes(value, "little")
            elif name == "lvt":
                value = [int(v) for v in value]
            setattr(self, name, value)
        self.divide_shift = _divide_shift(self.divide_config)
        age, left = state["timer_age"], state["deadline_in"]
        self.timer_start = None if age is None else now - int(age)
        self.timer_deadline = None if left is None else now + int(left)
