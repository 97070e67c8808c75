"""The MC146818 real-time clock and its CMOS NVRAM (ports 0x70/0x71), as SeaBIOS reads them.

The clock runs from host time plus a guest-set offset; the NVRAM carries memory sizes, boot order,
CPU count and the equipment byte as QEMU's `pc` machine fills them in."""

from __future__ import annotations

import calendar
import logging
import time
from typing import Callable, Sequence

log = logging.getLogger("headbox.devices.cmos")

INDEX_PORT, DATA_PORT = 0x70, 0x71
NVRAM_SIZE = 128
NMI_DISABLE = 0x80

SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR = 0x06, 0x07, 0x08, 0x09
STATUS_A, STATUS_B, STATUS_C, STATUS_D = 0x0A, 0x0B, 0x0C, 0x0D
SHUTDOWN_CODE = 0x0F
FLOPPY_TYPES = 0x10
EQUIPMENT = 0x14
BASE_MEMORY_LOW, BASE_MEMORY_HIGH = 0x15, 0x16
EXT_MEMORY_LOW, EXT_MEMORY_HIGH = 0x17, 0x18
EXT_MEMORY2_LOW, EXT_MEMORY2_HIGH = 0x30, 0x31     # the same value again, where SeaBIOS reads it
CENTURY = 0x32
MEMORY_ABOVE_16M_LOW, MEMORY_ABOVE_16M_HIGH = 0x34, 0x35
BOOT_FLAG_1 = 0x38                                  # bits 7:4 third boot device, bit 0 skip floppy check
BOOT_FLAG_2 = 0x3D                                  # bits 3:0 first, 7:4 second boot device
MEMORY_ABOVE_4G = 0x5B                              # 3 bytes, 64 KiB units, LSB first
CPU_COUNT_MINUS_ONE = 0x5F

A_UIP = 0x80
A_DIVIDER_MASK, A_DIVIDER_NORMAL = 0x70, 0x20       # 32.768 kHz time base, clock running
A_RATE_MASK = 0x0F
B_SET, B_PIE, B_AIE, B_UIE, B_BINARY, B_24HOUR, B_DST = 0x80, 0x40, 0x20, 0x10, 0x04, 0x02, 0x01
C_IRQF, C_PF, C_AF, C_UF = 0x80, 0x40, 0x20, 0x10
D_VALID_RAM_AND_TIME = 0x80

# The datasheet sets UIP 244 us before each update so software reading the clock can wait it out.
UIP_LEAD = 244e-6

BOOT_DEVICES = {"floppy": 1, "disk": 2, "dvd": 3, "net": 4}
TIME_REGISTERS = frozenset({SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY})

KiB, MiB = 1 << 10, 1 << 20


def boot_order_bytes(boot_order: Sequence[str]) -> tuple[int, int]:
    """(register 0x3D, register 0x38) for up to three of floppy/disk/dvd/net; 'none' is skipped.

    CMOS has room for three devices only; a fourth keeps SeaBIOS's default priority."""
    codes = []
    for device in boot_order:
        if device == "none":
            continue
        if device not in BOOT_DEVICES:
            raise ValueError(f"unknown boot device '{device}' (expected floppy, dvd, disk, net or none)")
        codes.append(BOOT_DEVICES[device])
    codes = (codes + [0, 0, 0])[:3]
    return codes[0] | codes[1] << 4, codes[2] << 4


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _from_bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


class Cmos:
    """RTC registers 0x00-0x0D computed from `clock()` on read; 0x0E-0x7F plain NVRAM.

    `clock` returns host seconds since the epoch (time.time; tests pass their own). `utc=False`
    keeps local time in the RTC, as Windows guests expect."""

    def __init__(self, *, ram_below_4g: int, ram_above_4g: int = 0, cpus: int = 1,
                 boot_order: Sequence[str] = ("floppy", "dvd", "disk"),
                 clock: Callable[[], float] = time.time, utc: bool = True):
        if cpus < 1 or cpus > 256:
            raise ValueError(f"a VM has between 1 and 256 CPUs, not {cpus}")
        self.clock = clock
        self.utc = utc
        self._power_on = bytearray(NVRAM_SIZE)
        self._fill_configuration(ram_below_4g, ram_above_4g, cpus, boot_order)
        self.nvram = bytearray(self._power_on)
        self.index = 0
        self.nmi_disabled = False
        self.offset = 0.0            # guest RTC time minus host time, in seconds
        self._flags_seen_at = self._now()

    def _fill_configuration(self, below_4g: int, above_4g: int, cpus: int, boot_order) -> None:
        r = self._power_on
        r[STATUS_A] = A_DIVIDER_NORMAL | 0x06      # 1024 Hz periodic rate, as the BIOS sets it
        r[STATUS_B] = B_24HOUR
        r[STATUS_D] = D_VALID_RAM_AND_TIME
        r[EQUIPMENT] = 0x06                        # FPU present, PS/2 mouse present, no floppy
        r[BASE_MEMORY_LOW], r[BASE_MEMORY_HIGH] = (640).to_bytes(2, "little")
        ext_kib = min(max(below_4g // KiB - 1024, 0), 0xFFFF)
        r[EXT_MEMORY_LOW], r[EXT_MEMORY_HIGH] = ext_kib.to_bytes(2, "little")
        r[EXT_MEMORY2_LOW], r[EXT_MEMORY2_HIGH] = ext_kib.to_bytes(2, "little")
        above_16m = min(max(below_4g - 16 * MiB, 0) // (64 * KiB), 0xFFFF)
        r[MEMORY_ABOVE_16M_LOW], r[MEMORY_ABOVE_16M_HIGH] = above_16m.to_bytes(2, "little")
        r[MEMORY_ABOVE_4G:MEMORY_ABOVE_4G + 3] = min(above_4g // (64 * KiB), 0xFFFFFF).to_bytes(3, "little")
        r[CPU_COUNT_MINUS_ONE] = cpus - 1
        r[BOOT_FLAG_2], r[BOOT_FLAG_1] = boot_order_bytes(boot_order)

    # -- NVRAM access for other devices (disk types, floppy drives, translation flags) --------
    def get_byte(self, index: int) -> int:
        return self._read_register(index & 0x7F)

    def set_byte(self, index: int, value: int) -> None:
        """Set an NVRAM byte as configuration: it is kept across platform resets."""
        self._power_on[index & 0x7F] = value & 0xFF
        self.nvram[index & 0x7F] = value & 0xFF

    # -- ports -------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == 1:
            return self._read_register(self.index)
        return 0xFF                                # the index port is write-only

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            self.index = value & 0x7F
            self.nmi_disabled = bool(value & NMI_DISABLE)
        elif offset == 1:
            self._write_register(self.index, value)

    # -- registers ---------------------------------------------------------------------------
    def _now(self) -> float:
        return self.clock() + self.offset

    def _read_register(self, index: int) -> int:
        if index in TIME_REGISTERS:
            if not self.nvram[STATUS_B] & B_SET:
                self._latch_time(self._now())
            return self.nvram[index]
        if index == STATUS_A:
            return self.nvram[STATUS_A] | (A_UIP if self._update_in_progress() else 0)
        if index == STATUS_C:
            return self._take_flags()
        return self.nvram[index]

    def _write_register(self, index: int, value: int) -> None:
        if index in TIME_REGISTERS:
            setting = self.nvram[STATUS_B] & B_SET
            if not setting:
                self._latch_time(self._now())
            self.nvram[index] = value
            if not setting:
                self._set_time_from_registers()
        elif index == STATUS_A:
            self.nvram[STATUS_A] = value & ~A_UIP
        elif index == STATUS_B:
            old = self.nvram[STATUS_B]
            if value & B_SET and not old & B_SET:
                self._latch_time(self._now())      # freeze what the guest is about to edit
            if value & B_SET:
                value &= ~B_UIE                    # the datasheet: SET clears UIE
            self.nvram[STATUS_B] = value
            if old & B_SET and not value & B_SET:
                self._set_time_from_registers()
        elif index in (STATUS_C, STATUS_D):
            pass                                   # read-only
        else:
            self.nvram[index] = value

    def _encode(self, value: int) -> int:
        return value if self.nvram[STATUS_B] & B_BINARY else _bcd(value)

    def _decode(self, value: int) -> int:
        return value if self.nvram[STATUS_B] & B_BINARY else _from_bcd(value)

    def _latch_time(self, now: float) -> None:
        t = time.gmtime(now) if self.utc else time.localtime(now)
        r = self.nvram
        r[SECONDS] = self._encode(t.tm_sec % 60)
        r[MINUTES] = self._encode(t.tm_min)
        if r[STATUS_B] & B_24HOUR:
            r[HOURS] = self._encode(t.tm_hour)
        else:
            hour12 = t.tm_hour % 12 or 12
            r[HOURS] = self._encode(hour12) | (0x80 if t.tm_hour >= 12 else 0)
        r[DAY_OF_WEEK] = self._encode((t.tm_wday + 1) % 7 + 1)   # 1 = Sunday
        r[DAY_OF_MONTH] = self._encode(t.tm_mday)
        r[MONTH] = self._encode(t.tm_mon)
        r[YEAR] = self._encode(t.tm_year % 100)
        r[CENTURY] = self._encode(t.tm_year // 100)

    def _set_time_from_registers(self) -> None:
        r = self.nvram
        hours_reg = r[HOURS]
        if r[STATUS_B] & B_24HOUR:
            hour = self._decode(hours_reg)
        else:
            hour = self._decode(hours_reg & 0x7F) % 12 + (12 if hours_reg & 0x80 else 0)
        fields = (self._decode(r[CENTURY]) * 100 + self._decode(r[YEAR]), self._decode(r[MONTH]),
                  self._decode(r[DAY_OF_MONTH]), hour, self._decode(r[MINUTES]), self._decode(r[SECONDS]))
        try:
            parts = fields + (0, 0, -1)
            guest = calendar.timegm(parts) if self.utc else time.mktime(parts)
        except (ValueError, OverflowError):
            log.debug("guest wrote an invalid RTC time %r; clock left unchanged", fields)
            return
        self.offset = guest - self.clock()

    def _update_in_progress(self) -> bool:
        if self.nvram[STATUS_B] & B_SET or self.nvram[STATUS_A] & A_DIVIDER_MASK != A_DIVIDER_NORMAL:
            return False
        return self._now() % 1.0 >= 1.0 - UIP_LEAD

    def _periodic_interval(self) -> float | None:
        rate = self.nvram[STATUS_A] & A_RATE_MASK
        if not rate:
            return None
        if rate <= 2:
            rate += 7                              # rates 1 and 2 alias to 3.90625 ms and 7.8125 ms
        return (1 << (rate - 1)) / 32768.0

    def _take_flags(self) -> int:
        # Without an IRQ line the flags are worked out when read: what would have been latched since
        # the previous read of register C, which clears them.
        now = self._now()
        since = self._flags_seen_at
        self._flags_seen_at = now
        flags = 0
        running = self.nvram[STATUS_A] & A_DIVIDER_MASK == A_DIVIDER_NORMAL
        if running and not self.nvram[STATUS_B] & B_SET and int(now) > int(since):
            flags |= C_UF
        interval = self._periodic_interval()
        if running and interval and int(now / interval) > int(since / interval):
            flags |= C_PF
        if flags & (self.nvram[STATUS_B] & (B_PIE | B_UIE)):
            flags |= C_IRQF
        return flags

    # -- lifecycle ---------------------------------------------------------------------------
    def reset(self) -> None:
        # CMOS is battery-backed: a platform reset keeps NVRAM and time, only the index moves.
        self.index = 0

    def snapshot(self) -> dict:
        return {"nvram": bytes(self.nvram), "index": self.index, "nmi_disabled": self.nmi_disabled,
                "offset": self.offset, "flags_seen_at": self._flags_seen_at - self.offset}

    def restore(self, state: dict) -> None:
        nvram = bytes(state["nvram"])
        if len(nvram) != NVRAM_SIZE:
            raise ValueError(f"CMOS state has {len(nvram)} bytes of NVRAM, expected {NVRAM_SIZE}")
        self.nvram[:] = nvram
        self.index = int(state["index"]) & 0x7F
        self.nmi_disabled = bool(state["nmi_disabled"])
        self.offset = float(state["offset"])
        self._flags_seen_at = float(state["flags_seen_at"]) + self.offset
