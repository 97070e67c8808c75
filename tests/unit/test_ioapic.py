"""Unit tests of the 82093AA I/O APIC: register window, redirection entries, edge and level pins, EOI.

Messages leave through the deliver callback, recorded here as (dest, logical, mode, vector, level)."""

import msgpack
import pytest

from services.hw.interrupts.ioapic import IoApic


class Sent(list):
    def __call__(self, *msg):
        self.append(msg)


@pytest.fixture
def io():
    return IoApic(Sent())


def reg_write(io, index, value):
    io.write(0x00, index)
    io.write(0x10, value)


def reg_read(io, index):
    io.write(0x00, index)
    return io.read(0x10)


def program(io, pin, low, dest=0):
    reg_write(io, 0x11 + 2 * pin, dest << 24)
    reg_write(io, 0x10 + 2 * pin, low)


def test_identification_registers(io):
    assert reg_read(io, 1) == 0x170011
    reg_write(io, 0, 0x0A000000)
    assert reg_read(io, 0) == 0x0A000000
    assert reg_read(io, 2) == 0x0A000000
    assert io.read(0x00) == 2                      # IOREGSEL reads back


def test_entries_reset_masked_and_read_back(io):
    for pin in range(24):
        assert reg_read(io, 0x10 + 2 * pin) == 0x10000
    program(io, 5, 0x0000A935, dest=0x03)
    assert reg_read(io, 0x1A) == 0x0000A935 & ~0x4000
    assert reg_read(io, 0x1B) == 0x03000000
    reg_write(io, 0x1A, 0x5000 | 0x35)             # read-only bits are not writable
    assert reg_read(io, 0x1A) == 0x35


def test_edge_pin_delivers_on_rising_edge_only(io):
    program(io, 1, 0x31, dest=0)
    io.set_irq(1, True)
    assert io.deliver == [(0, False, 0, 0x31, False)]
    io.set_irq(1, True)
    assert len(io.deliver) == 1
    io.set_irq(1, False)
    io.set_irq(1, True)
    assert len(io.deliver) == 2


def test_masked_edge_is_lost(io):
    program(io, 4, 0x10034)
    io.set_irq(4, True)
    io.set_irq(4, False)
    program(io, 4, 0x34)
    assert io.deliver == []


def test_level_pin_remote_irr_and_eoi_redelivery(io):
    program(io, 11, 0x8000 | 0x800 | 0x41, dest=0x01)   # level, logical destination 1
    io.set_irq(11, True)
    assert io.deliver == [(1, True, 0, 0x41, True)]
    assert reg_read(io, 0x10 + 22) & 0x4000        # remote IRR
    io.set_irq(11, False)
    io.set_irq(11, True)
    assert len(io.deliver) == 1                       # held off by remote IRR
    io.eoi(0x41)
    assert len(io.deliver) == 2                       # still asserted: delivered again
    io.set_irq(11, False)
    io.eoi(0x41)
    assert len(io.deliver) == 2
    assert not reg_read(io, 0x10 + 22) & 0x4000


def test_eoi_of_another_vector_changes_nothing(io):
    program(io, 10, 0x8000 | 0x42)
    io.set_irq(10, True)
    io.eoi(0x43)
    assert reg_read(io, 0x10 + 20) & 0x4000
    assert len(io.deliver) == 1


def test_unmasking_an_asserted_level_pin_delivers(io):
    program(io, 16, 0x18000 | 0x50)
    io.set_irq(16, True)
    assert io.deliver == []
    program(io, 16, 0x8000 | 0x50)
    assert io.deliver == [(0, False, 0, 0x50, True)]


def test_switch_to_edge_clears_remote_irr(io):
    program(io, 9, 0x8000 | 0x49)
    io.set_irq(9, True)
    program(io, 9, 0x49)
    assert not reg_read(io, 0x10 + 18) & 0x4000


def test_delivery_modes_pass_through(io):
    program(io, 0, 0x700, dest=0xFF)               # ExtINT (virtual wire through the IO-APIC)
    io.set_irq(0, True)
    program(io, 3, 0x433)                          # NMI
    io.set_irq(3, True)
    program(io, 6, 0x136)                          # lowest priority
    io.set_irq(6, True)
    assert [m[2] for m in io.deliver] == [7, 4, 1]
    assert io.deliver[0][0] == 0xFF


def test_unaligned_and_unknown_offsets(io):
    assert io.read(0x20) == 0
    io.write(0x40, 0x12)                           # no EOI register on version 0x11
    assert reg_read(io, 0x60) == 0                 # beyond the 24 entries


def test_snapshot_restore(io):
    program(io, 11, 0x8000 | 0x41, dest=1)
    io.set_irq(11, True)
    state = msgpack.unpackb(msgpack.packb(io.snapshot()))
    sent = []
    other = IoApic(lambda *msg: sent.append(msg))
    other.restore(state)
    other.eoi(0x41)
    assert sent == [(1, False, 0, 0x41, True)]
    assert other.snapshot()["redir"][11] == io.snapshot()["redir"][11]
