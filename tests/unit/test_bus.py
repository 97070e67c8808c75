"""Bus dispatch: ranges, offsets, unclaimed accesses, overlays, string I/O and snapshots."""

import logging

import pytest

from services.hw.bus import Bus


class Recorder:
    def __init__(self, value=0x12345678):
        self.value = value
        self.reads = []
        self.writes = []
        self.state = {"n": 0}

    def read(self, offset, size):
        self.reads.append((offset, size))
        return self.value

    def write(self, offset, size, value):
        self.writes.append((offset, size, value))

    def snapshot(self):
        return dict(self.state)

    def restore(self, state):
        self.state = dict(state)


class Stringy(Recorder):
    def read_string(self, offset, size, count):
        return bytes(range(size * count))

    def write_string(self, offset, size, data):
        self.writes.append(("string", offset, size, bytes(data)))


def test_dispatch_by_range_with_relative_offsets():
    bus, a, b = Bus(), Recorder(), Recorder()
    bus.register(a, "pio", 0x70, 2, name="a")
    bus.register(b, "pio", 0x510, 12, name="b")
    bus.pio_write(0x71, 1, 0x5A)
    bus.pio_write(0x518, 4, 0xDEADBEEF)
    assert a.writes == [(1, 1, 0x5A)]
    assert b.writes == [(8, 4, 0xDEADBEEF)]
    assert bus.pio_read(0x70, 1) == 0x78          # masked to the access size
    assert bus.pio_read(0x511, 2) == 0x5678
    assert a.reads == [(0, 1)] and b.reads == [(1, 2)]


def test_unclaimed_reads_all_ones_and_writes_are_dropped(caplog):
    bus = Bus()
    bus.register(Recorder(), "pio", 0x80, 1, name="post")
    assert bus.pio_read(0x81, 1) == 0xFF
    assert bus.pio_read(0x81, 2) == 0xFFFF
    assert bus.pio_read(0x7F, 4) == 0xFFFFFFFF
    assert bus.mmio_read(0xFED00000, 4) == 0xFFFFFFFF
    assert bus.mmio_read(0xFED00000, 8) == 0xFFFFFFFFFFFFFFFF
    with caplog.at_level(logging.DEBUG, logger="headbox.devices"):
        bus.pio_write(0x1234, 1, 1)
        bus.pio_write(0x1234, 1, 2)
    assert len([r for r in caplog.records if "0x1234" in r.getMessage()]) == 1


def test_mmio_dispatch():
    bus, dev = Bus(), Recorder(0xAABBCCDD)
    bus.register(dev, "mmio", 0xFEBF0000, 0x1000, name="bar")
    assert bus.mmio_read(0xFEBF0010, 4) == 0xAABBCCDD
    bus.mmio_write(0xFEBF0FFC, 4, 7)
    assert dev.reads == [(0x10, 4)] and dev.writes == [(0xFFC, 4, 7)]
    assert bus.mmio_read(0xFEBF1000, 1) == 0xFF


def test_overlapping_ranges_are_refused_unless_overlay():
    bus, outer, inner = Bus(), Recorder(), Recorder()
    bus.register(outer, "pio", 0xCF8, 8, name="pci")
    with pytest.raises(ValueError, match="overlaps"):
        bus.register(inner, "pio", 0xCFE, 4, name="x")
    with pytest.raises(ValueError, match="overlaps"):
        bus.register(inner, "pio", 0xCF9, 1, name="x")
    bus.register(inner, "pio", 0xCF9, 1, name="rc", overlay=True)
    bus.pio_write(0xCF8, 4, 0x80000000)           # a dword at 0xCF8 still goes to the outer device
    bus.pio_write(0xCF9, 1, 0x06)
    bus.pio_write(0xCFD, 1, 0x11)                  # the outer device keeps its own offsets
    assert outer.writes == [(0, 4, 0x80000000), (5, 1, 0x11)]
    assert inner.writes == [(0, 1, 0x06)]


def test_register_validation():
    bus = Bus()
    with pytest.raises(ValueError, match="address space"):
        bus.register(Recorder(), "io", 0, 1)
    with pytest.raises(ValueError, match="outside"):
        bus.register(Recorder(), "pio", 0xFFFF, 2)
    bus.register(Recorder(), "pio", 0x60, 1, name="kbd")
    with pytest.raises(ValueError, match="already registered as 'kbd'"):
        bus.register(Recorder(), "pio", 0x64, 1, name="kbd")


def test_string_io_loops_or_uses_the_device_fast_path():
    bus, slow, fast = Bus(), Recorder(0x0102), Stringy()
    bus.register(slow, "pio", 0x1F0, 1, name="slow")
    bus.register(fast, "pio", 0x170, 1, name="fast")
    assert bus.pio_read_string(0x1F0, 2, 3) == bytes.fromhex("020102010201")
    bus.pio_write_string(0x1F0, 2, bytes.fromhex("3412 7856"))
    assert slow.writes == [(0, 2, 0x1234), (0, 2, 0x5678)]
    assert bus.pio_read_string(0x170, 2, 2) == bytes([0, 1, 2, 3])
    bus.pio_write_string(0x170, 1, b"hi")
    assert fast.writes == [("string", 0, 1, b"hi")]
    assert bus.pio_read_string(0x2F0, 1, 4) == b"\xff" * 4


def test_a_failing_device_reads_as_all_ones_and_does_not_raise(caplog):
    class Broken(Recorder):
        def read(self, offset, size):
            raise RuntimeError("bug")

        def write(self, offset, size, value):
            raise RuntimeError("bug")

    bus = Bus()
    bus.register(Broken(), "pio", 0x300, 1, name="broken")
    with caplog.at_level(logging.ERROR, logger="headbox.devices"):
        assert bus.pio_read(0x300, 1) == 0xFF
        bus.pio_write(0x300, 1, 0)
    assert any("broken" in r.getMessage() for r in caplog.records)


def test_one_device_at_two_ranges_has_one_name_and_snapshot_round_trips():
    bus, con, cmos = Bus(), Recorder(), Recorder()
    bus.register(con, "pio", 0x402, 1, name="debugcon")
    bus.register(con, "pio", 0xE9, 1)
    bus.register(cmos, "pio", 0x70, 2, name="cmos")
    assert set(bus.devices()) == {"debugcon", "cmos"}
    assert bus.device("cmos") is cmos
    cmos.state = {"n": 5}
    state = bus.snapshot()
    assert state == {"debugcon": {"n": 0}, "cmos": {"n": 5}}
    cmos.state = {"n": 0}
    bus.restore(state)
    assert cmos.state == {"n": 5}
    with pytest.raises(ValueError, match="lacks devices this VM has: debugcon"):
        bus.restore({"cmos": {}})
    with pytest.raises(ValueError, match="devices this VM lacks: vga"):
        bus.restore({**state, "vga": {}})
    with pytest.raises(KeyError, match="no device named 'ide'"):
        bus.device("ide")


def test_registering_later_invalidates_the_port_cache():
    bus = Bus()
    assert bus.pio_read(0x60, 1) == 0xFF
    bus.register(Recorder(0x1C), "pio", 0x60, 1, name="kbd")
    assert bus.pio_read(0x60, 1) == 0x1C


def test_unclaimed_accesses_go_to_the_fallback():
    class Far:
        def __init__(self):
            self.seen = []

        def pio_read(self, port, size):
            return 0x42

        def pio_write(self, port, size, value):
            self.seen.append(("w", port, value))

        def pio_read_string(self, port, size, count):
            return b"ab" * count

        def pio_write_string(self, port, size, data):
            self.seen.append(("ws", port, data))

        def mmio_read(self, addr, size):
            return 7

        def mmio_write(self, addr, size, value):
            self.seen.append(("mw", addr, value))

    far = Far()
    bus = Bus(far)
    assert bus.pio_read(0x3F8, 1) == 0x42
    bus.pio_write(0x3F8, 1, 0x41)
    assert bus.pio_read_string(0x1F0, 2, 2) == b"abab"
    bus.pio_write_string(0x1F0, 2, b"xy")
    assert bus.mmio_read(0xFEBF0000, 4) == 7
    bus.mmio_write(0xFEBF0000, 4, 9)
    assert far.seen == [("w", 0x3F8, 0x41), ("ws", 0x1F0, b"xy"), ("mw", 0xFEBF0000, 9)]


def test_unregister_frees_the_ranges_for_a_move():
    class Reg:
        def __init__(self, value):
            self.value = value

        def read(self, offset, size):
            return self.value

        def write(self, offset, size, value):
            pass

        def snapshot(self):
            return {}

        def restore(self, state):
            pass

    bus, bm = Bus(), Reg(0x42)
    bus.register(bm, "pio", 0xC000, 16, name="bus-master")
    assert bus.pio_read(0xC004, 1) == 0x42
    bus.unregister(bm)
    assert bus.pio_read(0xC004, 1) == 0xFF
    bus.register(bm, "pio", 0xD000, 16, name="bus-master")
    assert bus.pio_read(0xD000, 1) == 0x42
