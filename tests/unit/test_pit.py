"""Unit tests of the 8254: periodic IRQ0 over simulated time, one-shot, latch, read-back, port 0x61.

Time is integer nanoseconds handed in by the test; the writes are the ones SeaBIOS and Linux make."""

import msgpack
import pytest

from services.hw.interrupts.pit import PIT_HZ, Pit

MS = 1_000_000
T0 = 5_000_000_000              # an arbitrary monotonic-clock origin


class Recorder:
    def __init__(self):
        self.times = []
        self.now = 0

    def __call__(self):
        self.times.append(self.now)


def make_pit():
    rec = Recorder()
    return Pit(rec), rec


def program(pit, control, count, now, port=None):
    pit.write(0x43, control, now)
    port = port or 0x40 + (control >> 6)
    pit.write(port, count & 0xFF, now)
    pit.write(port, count >> 8, now)


def run_until(pit, rec, end):
    """Call advance() at every deadline up to `end`, as an engine would."""
    while pit.deadline is not None and pit.deadline <= end:
        rec.now = pit.deadline
        pit.advance(pit.deadline)
    rec.now = end
    pit.advance(end)


def ticks_to_ns(ticks):
    return ticks * 1_000_000_000 // PIT_HZ


@pytest.mark.parametrize("control", [0x34, 0x36])      # Linux: mode 2; mode 3 square wave
def test_periodic_irq0_at_1000hz(control):
    pit, rec = make_pit()
    program(pit, control, 1193, T0)
    run_until(pit, rec, T0 + 1000 * MS)
    assert len(rec.times) == 1000                      # 1193182 / 1193 = 1000.15 Hz
    gaps = {b - a for a, b in zip(rec.times, rec.times[1:])}
    assert min(gaps) >= 999_000 and max(gaps) <= 1_001_000
    assert rec.times[0] == T0 + -(-1193 * 1_000_000_000 // PIT_HZ)


def test_seabios_18hz_tick():
    pit, rec = make_pit()
    program(pit, 0x36, 0, T0)                          # count 0 means 65536
    run_until(pit, rec, T0 + 1000 * MS)
    assert len(rec.times) == 18                        # 18.2 Hz


def test_late_advance_coalesces_to_one_edge():
    pit, rec = make_pit()
    program(pit, 0x34, 1193, T0)
    rec.now = T0 + 100 * MS
    pit.advance(rec.now)
    assert len(rec.times) == 1
    assert pit.deadline > rec.now
    assert pit.deadline - rec.now <= ticks_to_ns(1193) + 1
    pit.advance(rec.now + 1)
    assert len(rec.times) == 1


def test_mode0_one_shot():
    pit, rec = make_pit()
    program(pit, 0x30, 1000, T0)
    assert pit.channels[0].out(T0) == 0
    end = pit.deadline
    assert end == T0 + -(-1000 * 1_000_000_000 // PIT_HZ)
    pit.advance(end - 1)
    assert rec.times == []
    assert pit.channels[0].out(end - 1) == 0
    run_until(pit, rec, T0 + 100 * MS)
    assert len(rec.times) == 1
    assert pit.channels[0].out(end) == 1
    assert pit.deadline is None


def test_mode0_first_byte_stops_and_second_restarts():
    pit, rec = make_pit()
    program(pit, 0x30, 1000, T0)
    pit.write(0x40, 0x10, T0 + 100_000)
    assert pit.deadline is None
    pit.write(0x40, 0x00, T0 + 200_000)
    assert pit.deadline == T0 + 200_000 + -(-16 * 1_000_000_000 // PIT_HZ)


def test_counter_latch_freezes_the_read_value():
    pit, _ = make_pit()
    program(pit, 0x34, 10000, T0)
    t = T0 + ticks_to_ns(2500) + 1
    pit.write(0x43, 0x00, t)                           # latch channel 0
    later = t + 3 * MS
    lo = pit.read(0x40, later)
    hi = pit.read(0x40, later)
    assert (hi << 8 | lo) == 10000 - 2500
    lo = pit.read(0x40, later)                         # the latch is consumed: live count now
    hi = pit.read(0x40, later)
    assert (hi << 8 | lo) == 10000 - (2500 + 3 * PIT_HZ // 1000) % 10000


def test_live_count_counts_down():
    pit, _ = make_pit()
    program(pit, 0x34, 1193, T0)
    values = []
    for ticks in (0, 100, 1000, 1192):
        t = T0 + ticks_to_ns(ticks) + 1
        lo = pit.read(0x40, t)
        values.append(pit.read(0x40, t) << 8 | lo)
    assert values == [1193, 1093, 193, 1]


def test_read_back_status_and_count():
    pit, _ = make_pit()
    pit.write_port61(0x00, T0)
    program(pit, 0xB0, 0x1234, T0)                     # channel 2, mode 0, word
    assert pit.read(0x42, T0 + MS) == 0x34             # gate low: the count holds
    assert pit.read(0x42, T0 + MS) == 0x12
    pit.write_port61(0x01, T0)
    t = T0 + ticks_to_ns(0x234) + 1
    pit.write(0x43, 0xC8, t)                           # read-back: count and status of channel 2
    status = pit.read(0x42, t + 5 * MS)
    assert status == (0 << 7) | (3 << 4) | (0 << 1)    # OUT low, word access, mode 0
    lo = pit.read(0x42, t + 5 * MS)
    hi = pit.read(0x42, t + 5 * MS)
    assert hi << 8 | lo == 0x1000
    pit.write(0x43, 0xE8, t)                           # status only
    assert pit.read(0x42, t) & 0x0F == 0
    pit.write(0x43, 0xD8, T0 + ticks_to_ns(0x1234) + 1)   # count only, after OUT rose
    lo = pit.read(0x42, t)
    assert lo == 0x00


def test_read_back_status_shows_out_and_null_count():
    pit, _ = make_pit()
    pit.write(0x43, 0x34, T0)
    pit.write(0x43, 0xE2, T0)
    assert pit.read(0x40, T0) == 0x40 | (3 << 4) | (2 << 1) | 0x80
    pit.write(0x40, 100, T0)
    pit.write(0x40, 0, T0)
    pit.write(0x43, 0xE2, T0)
    assert pit.read(0x40, T0) == 0x80 | (3 << 4) | (2 << 1)


def test_lobyte_and_hibyte_access_modes():
    pit, _ = make_pit()
    pit.write(0x43, 0x14, T0)                          # lobyte only, mode 2
    pit.write(0x40, 200, T0)
    assert pit.channels[0].count == 200
    assert pit.read(0x40, T0) == 200
    pit.write(0x43, 0x24, T0)                          # hibyte only
    pit.write(0x40, 0x12, T0)
    assert pit.channels[0].count == 0x1200
    assert pit.read(0x40, T0) == 0x12


def test_bcd_count():
    pit, _ = make_pit()
    pit.write(0x43, 0x35, T0)                          # mode 2, BCD
    pit.write(0x40, 0x00, T0)
    pit.write(0x40, 0x10, T0)                          # 1000 decimal
    assert pit.channels[0].count == 1000
    t = T0 + ticks_to_ns(1) + 1
    lo = pit.read(0x40, t)
    assert (pit.read(0x40, t) << 8 | lo) == 0x0999


def test_port61_out2_goes_high_when_ch2_count_elapses():
    # SeaBIOS tsctimer_setup / Linux pit_calibrate_tsc
    pit, _ = make_pit()
    now = T0
    pit.write_port61((pit.read_port61(now) & ~0x02) | 0x01, now)
    pit.write(0x43, 0xB0, now)
    pit.write(0x42, 0x00, now)
    pit.write(0x42, 0x08, now)                         # 0x800 ticks, ~1.7 ms
    end = T0 + ticks_to_ns(0x800)
    spins = 0
    t = now
    while not pit.read_port61(t) & 0x20:
        t += 10_000
        spins += 1
        assert spins < 10_000
    assert end <= t <= end + 10_000 + 1000
    assert pit.read_port61(t) & 0x03 == 0x01


def test_port61_refresh_bit_toggles():
    pit, _ = make_pit()
    seen = {pit.read_port61(T0 + i * 7_000) & 0x10 for i in range(10)}
    assert seen == {0, 0x10}


def test_gate_low_holds_channel2_mode0():
    pit, _ = make_pit()
    pit.write_port61(0x01, T0)
    program(pit, 0xB0, 1000, T0)
    half = T0 + ticks_to_ns(500) + 1
    pit.write_port61(0x00, half)                       # gate off: counting stops
    assert pit.read_port61(half + 10 * MS) & 0x20 == 0
    pit.write_port61(0x01, half + 10 * MS)
    assert pit.read_port61(half + 10 * MS + ticks_to_ns(499)) & 0x20 == 0
    assert pit.read_port61(half + 10 * MS + ticks_to_ns(501)) & 0x20


def test_gate_reloads_mode2_and_triggers_mode1():
    pit, _ = make_pit()
    program(pit, 0xB2, 100, T0)                        # channel 2 mode 1: waits for a gate edge
    assert pit.channels[2].out(T0 + MS) == 1
    pit.write_port61(0x01, T0 + MS)
    assert pit.channels[2].out(T0 + MS + 1000) == 0
    assert pit.channels[2].out(T0 + MS + ticks_to_ns(101)) == 1
    program(pit, 0xB4, 100, T0 + 2 * MS)               # mode 2 with the gate high runs at once
    assert pit.channels[2].elapsed(T0 + 2 * MS + ticks_to_ns(50) + 1) == 50
    pit.write_port61(0x00, T0 + 3 * MS)
    assert pit.channels[2].elapsed(T0 + 4 * MS) is None
    pit.write_port61(0x01, T0 + 5 * MS)
    assert pit.channels[2].elapsed(T0 + 5 * MS) == 0


def test_mode4_strobe():
    pit, rec = make_pit()
    program(pit, 0x38, 50, T0)
    run_until(pit, rec, T0 + 10 * MS)
    assert rec.times == [T0 + -(-51 * 1_000_000_000 // PIT_HZ)]


def test_mode3_output_is_a_square_wave():
    pit, _ = make_pit()
    program(pit, 0x36, 1000, T0)
    ch = pit.channels[0]
    assert ch.out(T0 + ticks_to_ns(100) + 1) == 1
    assert ch.out(T0 + ticks_to_ns(600) + 1) == 0
    assert ch.out(T0 + ticks_to_ns(1100) + 1) == 1


def test_reprogramming_delivers_an_edge_that_was_already_due():
    pit, rec = make_pit()
    program(pit, 0x34, 1193, T0)
    rec.now = T0 + 2 * MS
    pit.write(0x43, 0x34, rec.now)
    assert len(rec.times) == 1
    assert pit.deadline is None


def test_snapshot_restore_mid_period_keeps_timing():
    pit, rec = make_pit()
    program(pit, 0x34, 11932, T0)                      # 10 ms period
    run_until(pit, rec, T0 + 25 * MS)
    assert len(rec.times) == 2
    state = msgpack.unpackb(msgpack.packb(pit.snapshot(T0 + 25 * MS)))
    remaining = pit.deadline - (T0 + 25 * MS)

    base = 77_000_000_000                              # another process, another clock origin
    other, rec2 = make_pit()
    other.restore(state, base)
    assert other.deadline == base + remaining
    run_until(other, rec2, base + 100 * MS)
    run_until(pit, rec, T0 + 25 * MS + 100 * MS)
    assert [t - base for t in rec2.times] == [t - T0 - 25 * MS for t in rec.times[2:]]
    t = 3 * MS + 17
    assert other.read(0x40, base + t) == pit.read(0x40, T0 + 25 * MS + t)


def test_reset_stops_counting():
    pit, rec = make_pit()
    program(pit, 0x34, 1193, T0)
    pit.reset()
    assert pit.deadline is None
    run_until(pit, rec, T0 + 10 * MS)
    assert rec.times == []
