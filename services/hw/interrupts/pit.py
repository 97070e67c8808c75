"""The 8254 programmable interval timer (ports 0x40-0x43) and the port 0x61 gate/output bits of channel 2.

Sans-I/O: counts are computed from the `now` (monotonic ns) passed in; OUT0's rising edges call irq0()."""

from __future__ import annotations

from typing import Callable

PIT_HZ = 1_193_182
NS_PER_S = 1_000_000_000
REFRESH_NS = 15_085          # port 0x61 bit 4 toggles every 15.085 us, as on a PC's DRAM refresh

_CH_FIELDS = ("mode", "rw", "bcd", "count", "gate", "loaded", "frozen", "read_ff", "write_ff",
              "write_lsb", "latch_state", "latch_value", "status_latched", "status")


def _bcd_to_bin(v: int) -> int:
    return ((v >> 12) & 0xF) * 1000 + ((v >> 8) & 0xF) * 100 + ((v >> 4) & 0xF) * 10 + (v & 0xF)


def _bin_to_bcd(v: int) -> int:
    v %= 10000
    return ((v // 1000) << 12) | (((v // 100) % 10) << 8) | (((v // 10) % 10) << 4) | (v % 10)


class PitChannel:
    """One counter. `start` is the ns time of tick 0 while counting (None when stopped); `frozen`
    holds the elapsed ticks while a low gate suspends a mode 0/4 count."""

    __slots__ = _CH_FIELDS + ("start",)

    def __init__(self, gate: int):
        self.reset(gate)

    def reset(self, gate: int) -> None:
        # power-on: mode 3 binary, but not counting until software writes a count
        self.mode, self.rw, self.bcd = 3, 3, 0
        self.count = 0x10000
        self.gate = gate
        self.loaded = 0
        self.start = None
        self.frozen = None
        self.read_ff = self.write_ff = self.write_lsb = 0
        self.latch_state = self.latch_value = 0
        self.status_latched = self.status = 0

    def elapsed(self, now: int) -> int | None:
        """Input clock ticks since the count was loaded, or None when the counter does not run."""
        if self.frozen is not None:
            return self.frozen
        if self.start is None:
            return None
        return (now - self.start) * PIT_HZ // NS_PER_S

    def out(self, now: int) -> int:
        d = self.elapsed(now)
        mode = self.mode
        if d is None:
            return 0 if mode == 0 else 1
        count = self.count
        if mode == 0 or mode == 1:
            return 1 if d >= count else 0
        if mode == 2:
            return 0 if d % count == count - 1 else 1
        if mode == 3:
            return 1 if d % count < (count + 1) >> 1 else 0
        return 0 if d == count else 1

    def counter(self, now: int) -> int:
        """The value a latch would capture now."""
        d = self.elapsed(now)
        count = self.count
        if d is None:
            value = count
        elif self.mode == 2:
            value = count - d % count
        elif self.mode == 3:
            value = count - (2 * d) % count
        else:
            value = count - d
        if self.bcd:
            return _bin_to_bcd(value % 10000)
        return value & 0xFFFF

    def next_edge(self, now: int) -> int | None:
        """The ns time of the next rising edge of OUT strictly after `now`, or None."""
        d = self.elapsed(now)
        if d is None or self.frozen is not None:
            return None
        count, mode = self.count, self.mode
        if mode <= 1:
            if d >= count:
                return None
            tick = count
        elif mode <= 3:
            tick = (d // count + 1) * count
        else:
            if d > count:
                return None
            tick = count + 1
        return self.start + -(-tick * NS_PER_S // PIT_HZ)

    def set_gate(self, gate: int, now: int) -> None:
        gate = 1 if gate else 0
        if gate == self.gate:
            return
        self.gate = gate
        mode = self.mode
        if not self.loaded:
            return
        if mode == 0 or mode == 4:
            if gate:
                if self.frozen is not None:
                    # resume so that elapsed(now) == frozen
                    self.start = now - (-(-self.frozen * NS_PER_S // PIT_HZ))
                    self.frozen = None
            else:
                self.frozen = self.elapsed(now)
        elif gate:                                  # a rising gate triggers modes 1, 5 and reloads 2, 3
            self.start = now
        elif mode == 2 or mode == 3:
            self.start = None

    def load(self, value: int, now: int) -> None:
        if self.bcd:
            value = _bcd_to_bin(value)
            self.count = value or 10000
        else:
            self.count = value or 0x10000
        self.loaded = 1
        self.frozen = None
        mode = self.mode
        if mode == 1 or mode == 5:
            self.start = None                       # waits for a gate trigger
        elif self.gate:
            self.start = now
        elif mode == 0 or mode == 4:
            self.start = now
            self.frozen = 0
        else:
            self.start = None

    def control(self, value: int) -> None:
        mode = (value >> 1) & 7
        self.mode = mode - 4 if mode >= 6 else mode
        self.rw = (value >> 4) & 3
        self.bcd = value & 1
        self.read_ff = self.write_ff = 0
        self.loaded = 0
        self.start = None
        self.frozen = None

    def latch_count(self, now: int) -> None:
        if not self.latch_state:
            self.latch_value = self.counter(now)
            self.latch_state = self.rw

    def latch_status(self, now: int) -> None:
        if not self.status_latched:
            self.status = ((self.out(now) << 7) | ((0 if self.loaded else 1) << 6) | (self.rw << 4)
                           | (self.mode << 1) | self.bcd)
            self.status_latched = 1

    def read(self, now: int) -> int:
        if self.status_latched:
            self.status_latched = 0
            return self.status
        state = self.latch_state
        if state:
            value = self.latch_value
            if state == 1:
                self.latch_state = 0
                return value & 0xFF
            if state == 2:
                self.latch_state = 0
                return value >> 8
            self.latch_state = 2                    # word: LSB now, MSB next
            return value & 0xFF
        value = self.counter(now)
        rw = self.rw
        if rw == 1:
            return value & 0xFF
        if rw == 2:
            return value >> 8
        self.read_ff ^= 1
        return value & 0xFF if self.read_ff else value >> 8

    def write(self, value: int, now: int) -> None:
        rw = self.rw
        if rw == 1:
            self.load(value, now)
        elif rw == 2:
            self.load(value << 8, now)
        elif not self.write_ff:
            self.write_lsb = value
            self.write_ff = 1
            if self.mode == 0:
                # the first byte of a new mode 0 count stops the counter and drops OUT
                self.start = None
                self.frozen = None
                self.loaded = 0
        else:
            self.write_ff = 0
            self.load(self.write_lsb | (value << 8), now)

    def snapshot(self, now: int) -> dict:
        state = {name: getattr(self, name) for name in _CH_FIELDS}
        state["frozen"] = -1 if self.frozen is None else self.frozen
        state["age"] = None if self.start is None else now - self.start
        return state

    def restore(self, state: dict, now: int) -> None:
        for name in _CH_FIELDS:
            setattr(self, name, int(state[name]))
        self.frozen = None if state["frozen"] < 0 else int(state["frozen"])
        self.start = None if state["age"] is None else now - int(state["age"])


class Pit:
    """Three 8254 counters; channel 0 pulses IRQ0, channel 2's gate and OUT live in port 0x61."""

    __slots__ = ("channels", "port61", "deadline", "irq0")

    def __init__(self, irq0: Callable[[], None] | None = None):
        self.irq0 = irq0
        self.channels = (PitChannel(1), PitChannel(1), PitChannel(0))
        self.port61 = 0
        self.deadline: int | None = None       # next rising edge of channel 0's OUT

    def reset(self) -> None:
        for i, ch in enumerate(self.channels):
            ch.reset(0 if i == 2 else 1)
        self.port61 = 0
        self.deadline = None

    def advance(self, now: int) -> None:
        """Pulse IRQ0 once if channel 0's OUT rose by `now`; a late call never delivers a burst."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return
        self.deadline = self.channels[0].next_edge(now)
        if self.irq0 is not None:
            self.irq0()

    def read(self, port: int, now: int) -> int:
        if port == 0x43:
            return 0xFF                             # the control register is write-only
        return self.channels[port - 0x40].read(now)

    def write(self, port: int, value: int, now: int) -> None:
        value &= 0xFF
        if port != 0x43:
            if port == 0x40:
                self.advance(now)                   # an edge due before the reprogram still happens
            ch = self.channels[port - 0x40]
            ch.write(value, now)
            if port == 0x40:
                self.deadline = ch.next_edge(now)
            return
        sel = value >> 6
        if sel == 3:                                # read-back
            for i in range(3):
                if value & (2 << i):
                    ch = self.channels[i]
                    if not value & 0x20:
                        ch.latch_count(now)
                    if not value & 0x10:
                        ch.latch_status(now)
            return
        ch = self.channels[sel]
        if not value & 0x30:
            ch.latch_count(now)
            return
        if sel == 0:
            self.advance(now)
        ch.control(value)
        if sel == 0:
            self.deadline = None

    def read_port61(self, now: int) -> int:
        return ((self.port61 & 0x0F) | (((now // REFRESH_NS) & 1) << 4)
                | (self.channels[2].out(now) << 5))

    def write_port61(self, value: int, now: int) -> None:
        self.port61 = value & 0x0F
        self.channels[2].set_gate(value & 1, now)

    @property
    def speaker_on(self) -> bool:
        """Whether channel 2 drives the speaker (gate and speaker-data bits both set)."""
        return self.port61 & 3 == 3

    def snapshot(self, now: int) -> dict:
        return {"channels": [ch.snapshot(now) for ch in self.channels], "port61": self.port61,
                "deadline_in": None if self.deadline is None else self.deadline - now}

    def restore(self, state: dict, now: int) -> None:
        for ch, cs in zip(self.channels, state["channels"]):
            ch.restore(cs, now)
        self.port61 = int(state["port61"])
        d = state["deadline_in"]
        self.deadline = None if d is None else now + int(d)
