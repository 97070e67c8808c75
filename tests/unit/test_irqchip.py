"""Unit tests of the composed interrupt chip: QEMU pc wiring, PIC and APIC modes, timers, snapshots.

Everything goes through the engine-facing API (ports, MMIO, set_irq, advance, INTA) with simulated ns time."""

import msgpack
import pytest

from services.hw.interrupts.irqchip import InterruptChip

T0 = 10_000_000_000
MS = 1_000_000
LAPIC = 0xFEE00000
IOAPIC = 0xFEC00000


def out(chip, port, value, now=T0):
    assert chip.pio_write(port, 1, value, now)


def seabios_pic(chip):
    for port, value in ((0x20, 0x11), (0xA0, 0x11), (0x21, 0x08), (0xA1, 0x70), (0x21, 0x04),
                        (0xA1, 0x02), (0x21, 0x01), (0xA1, 0x01), (0x21, 0xFB), (0xA1, 0xFF)):
        out(chip, port, value)


def linux_pic(chip, mask_all=False):
    for port, value in ((0x21, 0xFF), (0xA1, 0xFF), (0x20, 0x11), (0x21, 0x30), (0x21, 0x04),
                        (0x21, 0x01), (0xA0, 0x11), (0xA1, 0x38), (0xA1, 0x02), (0xA1, 0x01)):
        out(chip, port, value)
    if not mask_all:
        out(chip, 0x21, 0xFA)                      # IRQ0 and the cascade
        out(chip, 0xA1, 0xFF)


def lapic_write(chip, reg, value, now=T0):
    assert chip.mmio_write(LAPIC + reg, 4, value, now)


def lapic_read(chip, reg, now=T0):
    return chip.mmio_read(LAPIC + reg, 4, now)


def ioapic_entry(chip, pin, low, dest=0):
    chip.mmio_write(IOAPIC, 4, 0x11 + 2 * pin, T0)
    chip.mmio_write(IOAPIC + 0x10, 4, dest << 24, T0)
    chip.mmio_write(IOAPIC, 4, 0x10 + 2 * pin, T0)
    chip.mmio_write(IOAPIC + 0x10, 4, low, T0)


def pit_1000hz(chip, now=T0, mode=0x34):
    out(chip, 0x43, mode, now)
    out(chip, 0x40, 1193 & 0xFF, now)
    out(chip, 0x40, 1193 >> 8, now)


def run(chip, start, end, eoi):
    """An engine's loop: advance at each deadline, take every pending interrupt, EOI it."""
    vectors = []
    now = start
    while True:
        deadline = chip.next_deadline()
        if deadline is None or deadline > end:
            break
        now = deadline
        chip.advance(now)
        while chip.interrupt_pending():
            vector = chip.acknowledge()
            vectors.append((now, vector))
            eoi(vector, now)
    return vectors


def pic_eoi(chip):
    def eoi(vector, now):
        if vector >= 0x70:
            out(chip, 0xA0, 0x20, now)
        out(chip, 0x20, 0x20, now)
    return eoi


def apic_eoi(chip):
    return lambda vector, now: lapic_write(chip, 0xB0, 0, now)


def test_foreign_ports_and_addresses_go_to_the_bus():
    chip = InterruptChip()
    assert chip.pio_read(0x60, 1, T0) is None
    assert chip.pio_read(0x3F8, 2, T0) is None
    assert chip.pio_write(0x80, 1, 0x12, T0) is False
    assert chip.mmio_read(0xFEB00000, 4, T0) is None
    assert chip.mmio_write(0xFED00000, 4, 0, T0) is False
    assert (chip.lapic_base, chip.ioapic_base) == (LAPIC, IOAPIC)


def test_mmio_identification():
    chip = InterruptChip()
    assert lapic_read(chip, 0x30) == 0x50014
    chip.mmio_write(IOAPIC, 4, 1, T0)
    assert chip.mmio_read(IOAPIC + 0x10, 4, T0) == 0x170011
    assert chip.mmio_read(LAPIC + 0x32, 1, T0) == 0x05      # byte 2 of the version register
    assert chip.apic_base_msr == 0xFEE00900


def test_pic_mode_seabios_keyboard_irq():
    chip = InterruptChip()
    seabios_pic(chip)
    out(chip, 0x21, 0xF9)
    chip.set_irq(1, True)
    assert chip.interrupt_pending()
    assert chip.acknowledge() == 0x09
    assert not chip.interrupt_pending()
    chip.set_irq(1, False)
    assert chip.acknowledge() is None


def test_pit_irq0_through_the_pic_at_1000hz():
    chip = InterruptChip()
    linux_pic(chip)
    pit_1000hz(chip)
    got = run(chip, T0, T0 + 1000 * MS, pic_eoi(chip))
    assert len(got) == 1000
    assert {v for _, v in got} == {0x30}


def test_virtual_wire_through_lint0_extint():
    chip = InterruptChip()
    seabios_pic(chip)
    lapic_write(chip, 0xF0, 0x1FF)                 # SeaBIOS smp_setup: enable, LINT0 ExtINT
    lapic_write(chip, 0x350, 0x8700)
    lapic_write(chip, 0x360, 0x8400)
    out(chip, 0x21, 0xFA)
    pit_1000hz(chip, mode=0x36)
    got = run(chip, T0, T0 + 10 * MS, pic_eoi(chip))
    assert [v for _, v in got] == [0x08] * 10
    assert chip.lapics[0].isr == 0                 # ExtINT bypasses the APIC's ISR
    lapic_write(chip, 0x350, 0x18700)              # LINT0 masked: the wire is cut
    assert run(chip, T0 + 10 * MS, T0 + 20 * MS, pic_eoi(chip)) == []
    assert chip.pic.intr and not chip.interrupt_pending()
    lapic_write(chip, 0xF0, 0x0FF, T0 + 20 * MS)   # software-disabled APIC: the PIC drives INTR
    assert chip.interrupt_pending()
    assert chip.acknowledge() == 0x08


def test_globally_disabled_apic_passes_the_pic_and_drops_its_page():
    chip = InterruptChip()
    seabios_pic(chip)
    out(chip, 0x21, 0xFA)
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x350, 0x10700)
    chip.set_irq(0, True)
    assert not chip.interrupt_pending()
    chip.apic_base_msr = 0xFEE00100                # enable bit clear
    assert chip.interrupt_pending()
    assert chip.acknowledge() == 0x08
    assert chip.mmio_read(LAPIC + 0x30, 4, T0) is None


def test_apic_base_relocation():
    chip = InterruptChip()
    chip.apic_base_msr = 0xFEB00900
    assert chip.lapic_base == 0xFEB00000
    assert chip.mmio_read(0xFEB00030, 4, T0) == 0x50014
    assert chip.mmio_read(LAPIC + 0x30, 4, T0) is None


def test_ioapic_mode_pit_arrives_on_pin2():
    chip = InterruptChip()
    linux_pic(chip, mask_all=True)                 # Linux masks the 8259 in APIC mode
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x350, 0x10700)
    ioapic_entry(chip, 2, 0x30)                    # edge, fixed, physical APIC 0
    pit_1000hz(chip)
    got = run(chip, T0, T0 + 100 * MS, apic_eoi(chip))
    assert len(got) == 100 and {v for _, v in got} == {0x30}
    ioapic_entry(chip, 0, 0x31)                    # pin 0 is not the PIT's
    ioapic_entry(chip, 2, 0x10030)
    assert run(chip, T0 + 100 * MS, T0 + 200 * MS, apic_eoi(chip)) == []


def test_isa_irqs_reach_both_controllers_and_pci_gsis_only_the_ioapic():
    chip = InterruptChip()
    seabios_pic(chip)
    out(chip, 0x21, 0x00)
    out(chip, 0xA1, 0x00)
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x350, 0x10700)
    ioapic_entry(chip, 4, 0x34)
    ioapic_entry(chip, 17, 0xA051)
    chip.set_irq(4, True)
    assert chip.pic.master.irr & 0x10
    assert chip.acknowledge() == 0x34
    chip.set_irq(17, True)
    assert chip.pic.master.irr == 0x10 and chip.pic.slave.irr == 0
    assert chip.lapics[0].irr >> 0x51 & 1


def test_level_triggered_pci_line_redelivered_after_eoi():
    chip = InterruptChip()
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x350, 0x10700)
    ioapic_entry(chip, 11, 0xA000 | 0x49)          # level, active low, fixed
    chip.set_irq(11, True)
    assert chip.acknowledge() == 0x49
    lapic_write(chip, 0xB0, 0)                     # handler forgot to clear the device: again
    assert chip.interrupt_pending()
    assert chip.acknowledge() == 0x49
    chip.set_irq(11, False)
    lapic_write(chip, 0xB0, 0)
    assert not chip.interrupt_pending()
    chip.mmio_write(IOAPIC, 4, 0x10 + 22, T0)
    assert not chip.mmio_read(IOAPIC + 0x10, 4, T0) & 0x4000


def test_apic_interrupt_served_before_extint():
    chip = InterruptChip()
    seabios_pic(chip)
    out(chip, 0x21, 0xFA)
    lapic_write(chip, 0xF0, 0x1FF)
    ioapic_entry(chip, 9, 0x59)
    chip.set_irq(0, True)
    chip.set_irq(9, True)
    assert chip.acknowledge() == 0x59
    assert chip.acknowledge() == 0x08


def test_tpr_blocks_apic_but_not_extint():
    chip = InterruptChip()
    seabios_pic(chip)
    out(chip, 0x21, 0xFA)
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x80, 0xF0)
    lapic_write(chip, 0x300, 0x40000 | 0x80)       # self-IPI below TPR
    assert not chip.interrupt_pending()
    chip.set_irq(0, True)
    assert chip.acknowledge() == 0x08
    lapic_write(chip, 0x80, 0x00)
    assert chip.acknowledge() == 0x80


def test_extint_message_from_the_ioapic():
    chip = InterruptChip()
    linux_pic(chip)
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x350, 0x10700)              # LINT0 masked: only the message brings INTR
    ioapic_entry(chip, 2, 0x700)
    pit_1000hz(chip)
    got = run(chip, T0, T0 + 3 * MS, pic_eoi(chip))
    assert [v for _, v in got] == [0x30] * 3


def test_lapic_timer_through_the_chip():
    chip = InterruptChip()
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x3E0, 0x3)                  # divide by 16
    lapic_write(chip, 0x320, 0x20000 | 0xEC)
    lapic_write(chip, 0x380, 62500)                # 1 ms
    assert chip.next_deadline() == T0 + MS
    assert lapic_read(chip, 0x390, T0 + MS // 2) == 31250
    got = run(chip, T0, T0 + 10 * MS, apic_eoi(chip))
    assert [t - T0 for t, _ in got] == [k * MS for k in range(1, 11)]


def test_next_deadline_is_the_earliest_timer():
    chip = InterruptChip()
    assert chip.next_deadline() is None
    linux_pic(chip)
    pit_1000hz(chip)
    pit_due = chip.next_deadline()
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x3E0, 0xB)
    lapic_write(chip, 0x320, 0xEC)
    lapic_write(chip, 0x380, 5000)
    assert chip.next_deadline() == T0 + 5000 < pit_due
    chip.advance(T0 + 5000)
    assert chip.next_deadline() == pit_due


def test_late_advance_coalesces():
    chip = InterruptChip()
    linux_pic(chip)
    pit_1000hz(chip)
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x3E0, 0xB)
    lapic_write(chip, 0x320, 0x20000 | 0xEC)
    lapic_write(chip, 0x380, 10_000)
    chip.advance(T0 + 500 * MS)                    # the host stalled for half a second
    vectors = []
    while chip.interrupt_pending():
        vectors.append(chip.acknowledge())
    assert sorted(vectors) == [0x30, 0xEC]
    assert chip.next_deadline() > T0 + 500 * MS


def test_port61_and_word_access_to_elcr():
    chip = InterruptChip()
    assert chip.pio_write(0x4D0, 2, 0x0C00, T0)
    assert chip.pio_read(0x4D0, 2, T0) == 0x0C00
    assert chip.pic.slave.elcr == 0x0C
    out(chip, 0x61, 0x01)
    out(chip, 0x43, 0xB0)
    out(chip, 0x42, 0x00)
    out(chip, 0x42, 0x08)
    assert not chip.pio_read(0x61, 1, T0 + MS) & 0x20
    assert chip.pio_read(0x61, 1, T0 + 2 * MS) & 0x20


def test_snapshot_restore_mid_period_keeps_timing():
    chip = InterruptChip()
    linux_pic(chip)
    pit_1000hz(chip, mode=0x34)
    lapic_write(chip, 0xF0, 0x1FF)
    lapic_write(chip, 0x3E0, 0x0)                  # divide by 2
    lapic_write(chip, 0x320, 0x20000 | 0xEC)
    lapic_write(chip, 0x380, 350_000)              # 700 us
    ioapic_entry(chip, 11, 0xA000 | 0x49)
    chip.set_irq(11, True)
    assert chip.acknowledge() == 0x49              # level vector in service across the snapshot

    def eoi(vector, now):
        if vector == 0x30:
            out(chip_, 0x20, 0x20, now)
        elif vector == 0xEC:
            lapic_write(chip_, 0xB0, 0, now)

    chip_ = chip
    first = run(chip, T0, T0 + 5 * MS + 123_456, eoi)
    cut = T0 + 5 * MS + 123_456
    state = msgpack.unpackb(msgpack.packb(chip.snapshot(cut)))
    assert state["version"] == 1

    base = 999_000_000_000
    other = InterruptChip()
    other.restore(state, base)
    assert other.next_deadline() - base == chip.next_deadline() - cut
    chip_ = chip
    rest = run(chip, cut, cut + 20 * MS, eoi)
    chip_ = other
    rest2 = run(other, base, base + 20 * MS, eoi)
    assert first and rest
    assert [(t - cut, v) for t, v in rest] == [(t - base, v) for t, v in rest2]
    # the level line still in service: its EOI re-delivers on both
    for c in (chip, other):
        assert c.lapics[0].isr == 1 << 0x49
        lapic_write(c, 0xB0, 0, T0)
        assert c.acknowledge() == 0x49


def test_restore_rejects_other_versions_and_cpu_counts():
    chip = InterruptChip()
    state = chip.snapshot(T0)
    with pytest.raises(ValueError):
        chip.restore(dict(state, version=2), T0)
    with pytest.raises(ValueError):
        InterruptChip(cpus=2).restore(state, T0)


def test_reset_returns_to_power_on_state():
    chip = InterruptChip()
    linux_pic(chip)
    pit_1000hz(chip)
    lapic_write(chip, 0xF0, 0x1FF)
    chip.apic_base_msr = 0xFEB00900
    chip.reset()
    assert chip.next_deadline() is None
    assert chip.lapic_base == LAPIC and chip.apic_base_msr == 0xFEE00900
    assert lapic_read(chip, 0xF0) == 0xFF
    assert chip.pio_read(0x21, 1, T0) == 0


def test_two_cpus_ipi_and_logical_delivery():
    chip = InterruptChip(cpus=2)
    for cpu in (0, 1):
        chip.mmio_write(LAPIC + 0xF0, 4, 0x1FF, T0, cpu=cpu)
        chip.mmio_write(LAPIC + 0xD0, 4, (1 << cpu) << 24, T0, cpu=cpu)
        chip.mmio_write(LAPIC + 0x350, 4, 0x10700, T0, cpu=cpu)
    assert chip.mmio_read(LAPIC + 0x20, 4, T0, cpu=1) == 1 << 24
    chip.mmio_write(LAPIC + 0x310, 4, 1 << 24, T0)
    chip.mmio_write(LAPIC + 0x300, 4, 0x66, T0)    # fixed IPI from CPU 0 to APIC 1
    assert not chip.interrupt_pending(0)
    assert chip.acknowledge(1) == 0x66
    chip.mmio_write(LAPIC + 0xB0, 4, 0, T0, cpu=1)
    ioapic_entry(chip, 5, 0x800 | 0x35, dest=0x03)  # logical, both CPUs
    chip.set_irq(5, True)
    assert chip.acknowledge(0) == 0x35 and chip.interrupt_pending(1)
    chip.mmio_write(LAPIC + 0x300, 4, 0xC4500, T0)  # INIT to all others, as SeaBIOS does
    assert chip.lapics[1].init_pending and not chip.lapics[0].init_pending
