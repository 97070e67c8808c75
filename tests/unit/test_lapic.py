"""Unit tests of the local APIC: registers, priorities (TPR/PPR/ISR), EOI, the timer, IPIs to self.

Register offsets and values follow the Intel SDM vol. 3 chapter 11 (xAPIC mode)."""

import msgpack
import pytest

from services.hw.interrupts.lapic import LocalApic

T0 = 3_000_000_000
ID, VERSION, TPR, PPR, EOI, LDR, DFR, SVR = 0x20, 0x30, 0x80, 0xA0, 0xB0, 0xD0, 0xE0, 0xF0
ISR0, TMR0, IRR0, ESR, ICR_LO, ICR_HI = 0x100, 0x180, 0x200, 0x280, 0x300, 0x310
LVT_TIMER, LVT_LINT0, LVT_LINT1, LVT_ERROR = 0x320, 0x350, 0x360, 0x370
TMICT, TMCCT, TDCR = 0x380, 0x390, 0x3E0


@pytest.fixture
def apic():
    a = LocalApic()
    a.write(SVR, 0x1FF, T0)                        # software enable, spurious vector 0xFF
    return a


def test_reset_values():
    a = LocalApic(apic_id=0)
    assert a.read(VERSION, T0) == 0x50014
    assert a.read(ID, T0) == 0
    assert a.read(SVR, T0) == 0xFF
    assert a.read(DFR, T0) == 0xFFFFFFFF
    assert a.read(LVT_TIMER, T0) == 0x10000
    assert a.read(LVT_LINT0, T0) == 0x700          # BSP: virtual wire, as QEMU resets it
    assert a.read(LVT_LINT1, T0) == 0x10000
    assert a.base_msr == 0xFEE00900
    assert LocalApic(apic_id=1, bsp=False).base_msr == 0xFEE00800
    assert LocalApic(apic_id=3, bsp=False).read(ID, T0) == 3 << 24


def test_fixed_interrupt_ack_and_eoi(apic):
    apic.deliver(0, 0x41)
    assert apic.has_interrupt()
    assert apic.read(IRR0 + 0x20, T0) == 1 << 1    # vector 0x41 lives in IRR dword 2
    assert apic.acknowledge() == 0x41
    assert apic.read(ISR0 + 0x20, T0) == 1 << 1
    assert apic.read(IRR0 + 0x20, T0) == 0
    assert not apic.has_interrupt()
    apic.write(EOI, 0, T0)
    assert apic.isr == 0


def test_highest_vector_first_and_isr_blocks_same_class(apic):
    apic.deliver(0, 0x80)
    apic.deliver(0, 0x31)
    assert apic.acknowledge() == 0x80
    apic.deliver(0, 0x8F)
    assert not apic.has_interrupt()                # same priority class as the one in service
    apic.deliver(0, 0x90)
    assert apic.acknowledge() == 0x90              # a higher class nests
    assert apic.read(PPR, T0) == 0x90
    apic.write(EOI, 0, T0)
    apic.write(EOI, 0, T0)
    assert apic.acknowledge() == 0x8F
    apic.write(EOI, 0, T0)
    assert apic.acknowledge() == 0x31


def test_tpr_masking(apic):
    apic.write(TPR, 0x50, T0)
    assert apic.read(PPR, T0) == 0x50
    apic.deliver(0, 0x45)
    apic.deliver(0, 0x5F)
    assert not apic.has_interrupt()
    assert apic.acknowledge() is None
    apic.deliver(0, 0x60)
    assert apic.acknowledge() == 0x60
    apic.write(EOI, 0, T0)
    apic.write(TPR, 0x00, T0)
    assert apic.acknowledge() == 0x5F


def test_level_eoi_reaches_the_ioapic(apic):
    eois = []
    apic.eoi_sink = eois.append
    apic.deliver(0, 0x61, level=True)
    apic.deliver(0, 0x52, level=False)
    assert apic.read(TMR0 + 0x30, T0) == 1 << 1
    assert apic.acknowledge() == 0x61
    apic.write(EOI, 0, T0)
    assert eois == [0x61]
    assert apic.acknowledge() == 0x52
    apic.write(EOI, 0, T0)
    assert eois == [0x61]


def test_software_disabled_apic_takes_no_fixed_interrupts():
    a = LocalApic()
    a.deliver(0, 0x40)
    assert not a.has_interrupt() and a.irr == 0
    a.write(LVT_TIMER, 0x20, T0)
    assert a.read(LVT_TIMER, T0) == 0x10020        # the mask cannot be cleared while disabled
    a.write(SVR, 0x1FF, T0)
    a.write(LVT_TIMER, 0x20, T0)
    a.write(LVT_LINT0, 0x8700, T0)                 # SeaBIOS smp_setup
    assert a.read(LVT_LINT0, T0) == 0x8700
    a.write(SVR, 0x0FF, T0)
    assert a.read(LVT_TIMER, T0) == 0x10020 and a.read(LVT_LINT0, T0) & 0x10000
    assert a.accepts_pic()                         # the 8259 drives the processor directly


def test_accepts_pic_through_lint0_extint(apic):
    assert apic.accepts_pic()
    apic.write(LVT_LINT0, 0x10700, T0)
    assert not apic.accepts_pic()
    apic.write(LVT_LINT0, 0x00700, T0)
    assert apic.accepts_pic()
    apic.write(LVT_LINT0, 0x00000, T0)             # fixed mode: not a virtual wire
    assert not apic.accepts_pic()


def test_global_disable_through_the_msr(apic):
    apic.write_base_msr(0xFEE00000 | 0x100, T0)
    assert not apic.hw_enabled
    assert apic.accepts_pic()
    apic.deliver(0, 0x40)
    assert apic.irr == 0
    apic.write_base_msr(0xFEE00900, T0)
    assert not apic.hw_enabled                     # only a reset brings it back
    apic.reset()
    assert apic.base_msr == 0xFEE00900


def test_base_relocation(apic):
    apic.write_base_msr(0xFED00000 | 0x900, T0)
    assert apic.base == 0xFED00000 and apic.hw_enabled


def test_one_shot_timer_at_divide_16(apic):
    apic.write(TDCR, 0x3, T0)                      # divide by 16
    apic.write(LVT_TIMER, 0xEC, T0)
    apic.write(TMICT, 1000, T0)
    assert apic.timer_deadline == T0 + 16000
    assert apic.read(TMCCT, T0 + 1600) == 900
    apic.advance(T0 + 15999)
    assert not apic.has_interrupt()
    apic.advance(T0 + 16000)
    assert apic.acknowledge() == 0xEC
    assert apic.timer_deadline is None
    assert apic.read(TMCCT, T0 + 20000) == 0
    apic.write(EOI, 0, T0 + 20000)
    apic.advance(T0 + 100000)
    assert not apic.has_interrupt()


def test_periodic_timer_at_divide_1_over_simulated_time(apic):
    apic.write(TDCR, 0xB, T0)                      # divide by 1: one tick per ns
    apic.write(LVT_TIMER, 0x20000 | 0xEF, T0)
    apic.write(TMICT, 100_000, T0)                 # 100 us
    fired = []
    end = T0 + 10_000_000
    while apic.timer_deadline <= end:
        now = apic.timer_deadline
        apic.advance(now)
        if apic.has_interrupt():
            assert apic.acknowledge() == 0xEF
            fired.append(now)
            apic.write(EOI, 0, now)
    assert len(fired) == 100
    assert all(b - a == 100_000 for a, b in zip(fired, fired[1:]))
    assert apic.read(TMCCT, T0 + 250_000) == 50_000
    assert apic.read(TMCCT, T0 + 300_001) == 99_999


def test_periodic_timer_that_fell_behind_fires_once(apic):
    apic.write(TDCR, 0xB, T0)
    apic.write(LVT_TIMER, 0x20000 | 0xEF, T0)
    apic.write(TMICT, 1000, T0)
    apic.advance(T0 + 1_000_500)
    assert apic.acknowledge() == 0xEF
    assert apic.irr == 0
    assert apic.timer_deadline == T0 + 1_001_000


def test_masked_timer_counts_without_firing(apic):
    apic.write(TDCR, 0xB, T0)
    apic.write(LVT_TIMER, 0x30000 | 0xEF, T0)      # periodic, masked
    apic.write(TMICT, 1000, T0)
    assert apic.timer_deadline is None
    assert apic.read(TMCCT, T0 + 2300) == 700
    apic.write(LVT_TIMER, 0x20000 | 0xEF, T0 + 2300)
    assert apic.timer_deadline == T0 + 3000


def test_timer_stops_on_zero_initial_count(apic):
    apic.write(LVT_TIMER, 0xEF, T0)
    apic.write(TMICT, 1000, T0)
    apic.write(TMICT, 0, T0 + 10)
    assert apic.timer_deadline is None
    assert apic.read(TMCCT, T0 + 100) == 0


def test_divide_change_keeps_the_count(apic):
    apic.write(TDCR, 0xB, T0)
    apic.write(LVT_TIMER, 0xEF, T0)
    apic.write(TMICT, 1000, T0)
    apic.write(TDCR, 0x1, T0 + 400)                # divide by 4 from here on
    assert apic.read(TMCCT, T0 + 400) == 600
    assert apic.read(TMCCT, T0 + 800) == 500
    assert apic.timer_deadline == T0 + 400 + 600 * 4


@pytest.mark.parametrize("dcr,divisor", [(0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32),
                                         (0x9, 64), (0xA, 128), (0xB, 1)])
def test_divide_encodings(apic, dcr, divisor):
    apic.write(TDCR, dcr, T0)
    apic.write(LVT_TIMER, 0xEF, T0)
    apic.write(TMICT, 10, T0)
    assert apic.timer_deadline == T0 + 10 * divisor


def test_timer_expiring_while_lvt_rewritten_still_fires(apic):
    apic.write(TDCR, 0xB, T0)
    apic.write(LVT_TIMER, 0xEF, T0)
    apic.write(TMICT, 1000, T0)
    apic.write(LVT_TIMER, 0xEF, T0 + 5000)         # the expiry at T0+1000 was not advanced yet
    assert apic.acknowledge() == 0xEF


def test_self_ipi(apic):
    apic.write(ICR_LO, 0x40000 | 0x55, T0)         # shorthand "self", fixed
    assert apic.read(ICR_LO, T0) & 0x1000 == 0     # never left "send pending"
    assert apic.acknowledge() == 0x55
    apic.write(EOI, 0, T0)
    apic.write(ICR_HI, 0, T0)                      # physical destination 0 = this APIC
    apic.write(ICR_LO, 0x56, T0)
    assert apic.acknowledge() == 0x56
    apic.write(EOI, 0, T0)
    apic.write(ICR_LO, 0xC0000 | 0x57, T0)         # all excluding self: nobody else here
    assert apic.irr == 0
    apic.write(ICR_HI, 5 << 24, T0)
    apic.write(ICR_LO, 0x58, T0)                   # an absent APIC
    assert apic.irr == 0


def test_ipi_nmi_and_init_sipi_are_recorded(apic):
    apic.write(ICR_LO, 0x40000 | 0x400, T0)        # NMI to self
    assert apic.take_nmi() and not apic.take_nmi()
    apic.write(ICR_LO, 0x4500, T0)                 # INIT assert to APIC 0
    assert apic.init_pending
    apic.write(ICR_LO, 0x4608, T0)                 # SIPI vector 8
    assert apic.sipi_vector == 0x08


def test_illegal_vector_sets_esr_and_error_lvt(apic):
    apic.write(LVT_ERROR, 0xFE, T0)
    apic.write(ICR_LO, 0x40000 | 0x05, T0)
    apic.write(ESR, 0, T0)
    assert apic.read(ESR, T0) == 0x20              # send illegal vector
    assert apic.acknowledge() == 0xFE
    apic.write(ESR, 0, T0)
    assert apic.read(ESR, T0) == 0


def test_logical_destination_flat_and_cluster(apic):
    apic.write(LDR, 0x04000000, T0)
    assert apic.matches(0x04, True) and apic.matches(0x06, True)
    assert not apic.matches(0x08, True)
    apic.write(DFR, 0x0FFFFFFF, T0)                # cluster model
    apic.write(LDR, 0x21000000, T0)                # cluster 2, member bit 0
    assert apic.read(DFR, T0) == 0x0FFFFFFF
    assert apic.matches(0x21, True) and apic.matches(0x23, True)
    assert not apic.matches(0x11, True) and not apic.matches(0x22, True)
    assert apic.matches(0xFF, True) and apic.matches(0, False) and not apic.matches(1, False)


def test_lint1_nmi(apic):
    apic.write(LVT_LINT1, 0x400, T0)
    apic.set_lint(1, True)
    assert apic.take_nmi()


def test_snapshot_restore_mid_period(apic):
    apic.write(TDCR, 0x3, T0)
    apic.write(LVT_TIMER, 0x20000 | 0xEF, T0)
    apic.write(TMICT, 625, T0)                     # 10 us at divide 16
    apic.deliver(0, 0x61, level=True)
    assert apic.acknowledge() == 0x61
    now = T0 + 37_000
    apic.advance(now)
    state = msgpack.unpackb(msgpack.packb(apic.snapshot(now)))
    base = 123_456_789
    other = LocalApic()
    other.restore(state, base)
    assert other.timer_deadline - base == apic.timer_deadline - now
    for dt in (0, 1234, 9999):
        assert other.read(TMCCT, base + dt) == apic.read(TMCCT, now + dt)
    assert other.isr == apic.isr and other.tmr == apic.tmr and other.irr == apic.irr
    assert other.snapshot(base) == apic.snapshot(now)
