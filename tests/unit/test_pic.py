"""Unit tests of the 8259A pair: the init sequences of SeaBIOS and Linux, priorities, cascade, EOI, ELCR.

Port values are the ones the firmware and kernel write (src/hw/pic.c, arch/x86/kernel/i8259.c)."""

import msgpack
import pytest

from services.hw.interrupts.pic import DualPic


def seabios_init(pic: DualPic) -> None:
    for port, value in ((0x20, 0x11), (0xA0, 0x11), (0x21, 0x08), (0xA1, 0x70), (0x21, 0x04),
                        (0xA1, 0x02), (0x21, 0x01), (0xA1, 0x01), (0x21, 0xFB), (0xA1, 0xFF)):
        pic.write(port, value)


def linux_init(pic: DualPic, auto_eoi: bool = False) -> None:
    pic.write(0x21, 0xFF)
    pic.write(0xA1, 0xFF)
    for port, value in ((0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x03 if auto_eoi else 0x01),
                        (0xA0, 0x11), (0xA1, 0x38), (0xA1, 0x02), (0xA1, 0x01)):
        pic.write(port, value)
    pic.write(0x21, 0x00)
    pic.write(0xA1, 0x00)


@pytest.fixture
def pic():
    p = DualPic()
    seabios_init(p)
    p.write(0x21, 0x00)
    p.write(0xA1, 0x00)
    return p


def pulse(pic, irq):
    pic.set_irq(irq, True)
    pic.set_irq(irq, False)


def test_seabios_init_sets_vector_bases_and_masks():
    p = DualPic()
    seabios_init(p)
    assert p.read(0x21) == 0xFB and p.read(0xA1) == 0xFF
    assert p.master.base == 0x08 and p.slave.base == 0x70
    assert p.master.init_step == 0 and p.slave.init_step == 0
    pulse(p, 1)
    assert not p.intr                              # masked, but requested
    p.write(0x20, 0x0A)
    assert p.read(0x20) == 0x02
    p.write(0x21, 0xF9)                            # unmask IRQ1: the held edge now interrupts
    assert p.intr
    assert p.acknowledge() == 0x09
    assert not p.intr


def test_irq_delivery_and_non_specific_eoi(pic):
    pulse(pic, 1)
    assert pic.intr
    assert pic.acknowledge() == 0x09
    pic.write(0x20, 0x0B)
    assert pic.read(0x20) == 0x02                  # ISR
    pic.write(0x20, 0x0A)
    assert pic.read(0x20) == 0x00                  # IRR
    pic.write(0x20, 0x20)                          # non-specific EOI
    pic.write(0x20, 0x0B)
    assert pic.read(0x20) == 0x00


def test_priority_and_nesting(pic):
    pulse(pic, 3)
    pulse(pic, 1)
    assert pic.acknowledge() == 0x09               # IRQ1 before IRQ3
    assert not pic.intr                            # IRQ3 is lower than the in-service IRQ1
    pulse(pic, 0)
    assert pic.intr                                # IRQ0 nests above IRQ1
    assert pic.acknowledge() == 0x08
    pic.write(0x20, 0x20)                          # EOI of IRQ0 (highest in service)
    assert not pic.intr
    pic.write(0x20, 0x20)                          # EOI of IRQ1
    assert pic.intr
    assert pic.acknowledge() == 0x0B


def test_cascade_through_irq2(pic):
    pulse(pic, 12)
    assert pic.intr
    assert pic.master.irr & 4
    assert pic.acknowledge() == 0x74
    assert pic.master.isr == 0x04 and pic.slave.isr == 0x10
    # Linux acks the slave then the cascade line with specific EOIs
    pic.write(0xA0, 0x60 + 4)
    pic.write(0x20, 0x60 + 2)
    assert pic.master.isr == 0 and pic.slave.isr == 0
    assert not pic.intr


def test_second_slave_interrupt_after_first_is_acknowledged(pic):
    pulse(pic, 14)
    pulse(pic, 8)
    assert pic.acknowledge() == 0x70               # IRQ8 first (highest on the slave)
    pic.write(0xA0, 0x20)
    pic.write(0x20, 0x20)
    assert pic.intr
    assert pic.acknowledge() == 0x76


def test_master_irq_beats_slave_and_slave_beats_lower_master(pic):
    pulse(pic, 10)
    pulse(pic, 5)
    pulse(pic, 1)
    assert [pic.acknowledge() for _ in range(1)] == [0x09]
    pic.write(0x20, 0x20)
    assert pic.acknowledge() == 0x72               # IRQ2's slave beats IRQ5
    pic.write(0xA0, 0x20)
    pic.write(0x20, 0x20)
    assert pic.acknowledge() == 0x0D


def test_spurious_vectors(pic):
    assert not pic.intr
    assert pic.acknowledge() == 0x0F               # master IRQ7, ISR untouched
    assert pic.master.isr == 0
    # a level line on the slave that drops between the cascade edge and INTA gives IRQ15
    pic.write(0x4D1, 0x08)                         # IRQ11 level
    pic.set_irq(11, True)
    assert pic.intr
    pic.set_irq(11, False)
    assert pic.intr                                # master IR2 is edge-latched
    assert pic.acknowledge() == 0x77
    assert pic.slave.isr == 0 and pic.master.isr == 4


def test_edge_needs_a_new_rising_edge(pic):
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x0C
    pic.write(0x20, 0x20)
    pic.set_irq(4, True)                           # still high: no new edge
    assert not pic.intr
    pic.set_irq(4, False)
    pic.set_irq(4, True)
    assert pic.intr


def test_edge_request_survives_line_drop(pic):
    pulse(pic, 6)
    assert pic.intr
    assert pic.acknowledge() == 0x0E


def test_elcr_masks_and_level_behaviour(pic):
    pic.write(0x4D0, 0xFF)
    pic.write(0x4D1, 0xFF)
    assert pic.read(0x4D0) == 0xF8 and pic.read(0x4D1) == 0xDE
    pic.write(0x4D0, 0x00)
    pic.write(0x4D1, 0x0C)                         # IRQ10 and IRQ11 level, as SeaBIOS sets PCI links
    pic.set_irq(10, True)
    assert pic.acknowledge() == 0x72
    assert pic.slave.irr & 4                       # still asserted
    pic.write(0xA0, 0x20)
    pic.write(0x20, 0x20)
    assert pic.intr                                # re-requested after EOI while the line is high
    assert pic.acknowledge() == 0x72
    pic.set_irq(10, False)                         # the device handler cleared the source
    pic.write(0xA0, 0x20)
    pic.write(0x20, 0x20)
    assert not pic.intr and pic.slave.irr == 0


def test_level_line_dropped_before_ack_clears_request(pic):
    pic.write(0x4D0, 0x20)                         # IRQ5 level
    pic.set_irq(5, True)
    assert pic.intr
    pic.set_irq(5, False)
    assert not pic.intr


def test_specific_eoi_and_rotation(pic):
    pulse(pic, 3)
    pulse(pic, 5)
    assert pic.acknowledge() == 0x0B
    pic.write(0x20, 0x65)                          # specific EOI of the wrong level leaves IRQ3
    assert pic.master.isr == 0x08
    pic.write(0x20, 0x63)
    assert pic.master.isr == 0
    # set priority: IRQ4 becomes the lowest, so IRQ5 is now the highest
    pic.write(0x20, 0xC4)
    pulse(pic, 3)
    assert pic.acknowledge() == 0x0D
    assert not pic.intr                            # IRQ3 now ranks below the in-service IRQ5
    pic.write(0x20, 0x20)
    assert pic.acknowledge() == 0x0B


def test_rotate_on_non_specific_eoi(pic):
    pulse(pic, 0)
    assert pic.acknowledge() == 0x08
    pic.write(0x20, 0xA0)                          # rotate: IRQ0 becomes the lowest
    pulse(pic, 0)
    pulse(pic, 1)
    assert pic.acknowledge() == 0x09


def test_auto_eoi_mode():
    p = DualPic()
    linux_init(p, auto_eoi=True)
    pulse(p, 1)
    assert p.acknowledge() == 0x31
    assert p.master.isr == 0
    pulse(p, 3)
    assert p.acknowledge() == 0x33                 # nothing in service blocks it


def test_linux_init_vectors():
    p = DualPic()
    linux_init(p)
    pulse(p, 0)
    assert p.acknowledge() == 0x30
    p.write(0x20, 0x60)
    pulse(p, 9)
    assert p.acknowledge() == 0x39


def test_poll_command(pic):
    pic.write(0x20, 0x0C)
    assert pic.read(0x20) == 0x00                  # nothing pending
    pulse(pic, 3)
    pic.write(0x20, 0x0C)
    assert pic.read(0x20) == 0x83
    assert pic.master.isr == 0x08
    assert not pic.intr
    pic.write(0x20, 0x0B)
    assert pic.read(0x20) == 0x08                  # back to normal register reads


def test_special_mask_mode_lets_lower_levels_in(pic):
    pulse(pic, 1)
    assert pic.acknowledge() == 0x09
    pic.write(0x20, 0x68)                          # enter special mask mode
    pic.write(0x21, 0x02)                          # mask the in-service IRQ1
    pulse(pic, 4)
    assert pic.intr
    assert pic.acknowledge() == 0x0C
    pic.write(0x20, 0x48)                          # leave special mask mode


def test_icw1_resets_mask_and_requests(pic):
    pic.write(0x21, 0xFF)
    pulse(pic, 1)
    pic.write(0x20, 0x11)
    for v in (0x08, 0x04, 0x01):
        pic.write(0x21, v)
    assert pic.read(0x21) == 0x00
    assert not pic.intr                            # the old edge request is gone


def test_snapshot_restore_roundtrip(pic):
    pic.write(0x4D1, 0x08)
    pic.set_irq(11, True)
    pulse(pic, 3)
    assert pic.acknowledge() == 0x73               # the cascade outranks IRQ3
    state = msgpack.unpackb(msgpack.packb(pic.snapshot()))
    other = DualPic()
    other.restore(state)
    for p in (pic, other):
        assert not p.intr
        p.write(0xA0, 0x20)
        p.write(0x20, 0x20)
        assert p.acknowledge() == 0x73             # the level line is still up
        p.set_irq(11, False)
        p.write(0xA0, 0x20)
        p.write(0x20, 0x20)
        assert p.acknowledge() == 0x0B
    assert pic.snapshot() == other.snapshot()
