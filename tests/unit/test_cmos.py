"""RTC/CMOS: the registers SeaBIOS reads (src/hw/rtc.h, src/fw/paravirt.c, src/boot.c)."""

import calendar

import pytest

from services.hw.bus import Bus
from services.hw.chipset.cmos import Cmos, boot_order_bytes

MiB, GiB = 1 << 20, 1 << 30
# Thursday 29 February 2024, 13:45:59.5 UTC
T0 = calendar.timegm((2024, 2, 29, 13, 45, 59)) + 0.5


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def make(ram_below_4g=64 * MiB, ram_above_4g=0, **kw):
    clock = kw.pop("clock", Clock())
    bus = Bus()
    cmos = Cmos(ram_below_4g=ram_below_4g, ram_above_4g=ram_above_4g, clock=clock, **kw)
    bus.register(cmos, "pio", 0x70, 2, name="cmos")

    def rtc_read(index):          # exactly what SeaBIOS's rtc_read does: NMI bit set in the index
        bus.pio_write(0x70, 1, index | 0x80)
        return bus.pio_read(0x71, 1)

    def rtc_write(index, value):
        bus.pio_write(0x70, 1, index | 0x80)
        bus.pio_write(0x71, 1, value)

    return cmos, clock, rtc_read, rtc_write


def test_clock_in_bcd_24h():
    cmos, _, rd, _ = make()
    assert [rd(i) for i in (0, 2, 4, 6, 7, 8, 9, 0x32)] == [0x59, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20]
    assert rd(0x0B) == 0x02 and rd(0x0D) == 0x80 and rd(0x0A) == 0x26
    assert cmos.nmi_disabled


def test_binary_and_12_hour_formats():
    _, _, rd, wr = make()
    wr(0x0B, 0x06)                          # binary, 24h
    assert (rd(0), rd(2), rd(4), rd(9)) == (59, 45, 13, 24)
    wr(0x0B, 0x00)                          # BCD, 12h: 13:45 is 1 PM
    assert rd(4) == 0x81


def test_clock_follows_host_time():
    _, clock, rd, _ = make()
    clock.t += 3600 * 11 + 60 * 14 + 1      # 01:00:00 on 1 March
    assert (rd(4), rd(2), rd(0), rd(7), rd(8), rd(6)) == (0x01, 0x00, 0x00, 0x01, 0x03, 0x06)


def test_update_in_progress_only_just_before_the_second_ends():
    _, clock, rd, _ = make()
    assert not rd(0x0A) & 0x80
    clock.t = int(T0) + 0.9999
    assert rd(0x0A) & 0x80
    clock.t = int(T0) + 1.001               # rtc_updating() polls until this happens
    assert not rd(0x0A) & 0x80


def test_seabios_rtc_setup_sequence():
    _, _, rd, wr = make()
    wr(0x0A, 0x26)
    wr(0x0B, (rd(0x0B) & ~0x01) | 0x02)     # rtc_mask(CMOS_STATUS_B, ~RTC_B_DSE, RTC_B_24HR) keeps 24h
    rd(0x0C)
    assert rd(0x0D) == 0x80
    assert rd(0x0B) & 0x02
    wr(0x0A, 0xA6)                          # UIP is read-only
    assert rd(0x0A) & 0x7F == 0x26


def test_guest_sets_the_time_with_the_set_bit():
    _, clock, rd, wr = make()
    wr(0x0B, 0x82)                          # SET: the clock stops for editing
    wr(0x04, 0x08)
    wr(0x02, 0x30)
    wr(0x00, 0x00)
    clock.t += 10
    assert rd(0x04) == 0x08 and rd(0x00) == 0x00
    wr(0x0B, 0x02)                          # running again from 08:30:00
    clock.t += 5
    assert (rd(0x04), rd(0x02), rd(0x00), rd(0x07)) == (0x08, 0x30, 0x05, 0x29)


def test_direct_time_write_without_set_moves_the_clock():
    _, clock, rd, wr = make()
    wr(0x09, 0x25)                          # the year becomes 2025
    clock.t += 1
    assert rd(0x09) == 0x25 and rd(0x32) == 0x20


def test_status_c_flags_are_cleared_by_reading():
    _, clock, rd, wr = make()
    rd(0x0C)
    clock.t += 1.0
    wr(0x0B, 0x12)                          # UIE
    assert rd(0x0C) == 0x80 | 0x40 | 0x10   # IRQF, PF (1024 Hz), UF
    assert rd(0x0C) == 0


def test_memory_size_registers_64m():
    _, _, rd, _ = make(64 * MiB)
    assert (rd(0x15), rd(0x16)) == (0x80, 0x02)                 # 640 KiB base memory
    assert (rd(0x17), rd(0x18)) == (0x00, 0xFC)                 # 63 MiB above 1 MiB in KiB
    assert (rd(0x30), rd(0x31)) == (0x00, 0xFC)
    assert (rd(0x34), rd(0x35)) == (0x00, 0x03)                 # 48 MiB above 16 MiB in 64 KiB
    assert (rd(0x5B), rd(0x5C), rd(0x5D)) == (0, 0, 0)


def test_memory_size_registers_above_4g():
    _, _, rd, _ = make(0xE0000000, 5 * GiB - 0xE0000000)        # 5 GiB: 3.5 below, 1.5 above
    # SeaBIOS's fallback: rs = (0x34 | 0x35 << 8) * 64 KiB + 16 MiB
    rs = ((rd(0x34) << 16) | (rd(0x35) << 24)) + 16 * MiB
    assert rs == 0xE0000000
    assert (rd(0x17), rd(0x18)) == (0xFF, 0xFF)                 # capped
    high = (rd(0x5B) << 16) | (rd(0x5C) << 24) | (rd(0x5D) << 32)
    assert high == 5 * GiB - 0xE0000000


def test_cpus_equipment_and_boot_order():
    _, _, rd, _ = make(cpus=4, boot_order=("dvd", "disk"))
    assert rd(0x5F) == 3
    assert rd(0x14) == 0x06
    assert rd(0x3D) == 0x23                 # QEMU -boot dc
    assert rd(0x38) == 0x00
    assert boot_order_bytes(("net", "none", "floppy", "disk", "dvd")) == (0x14, 0x20)
    # SeaBIOS boot_init: (0x3D | (0x38 & 0xf0) << 4), one nibble per priority
    assert boot_order_bytes(("floppy", "dvd", "disk")) == (0x31, 0x20)


def test_bad_configuration_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown boot device 'cdrom'"):
        make(boot_order=("cdrom",))
    with pytest.raises(ValueError, match="between 1 and 256 CPUs"):
        make(cpus=0)


def test_nvram_is_plain_storage_and_snapshot_round_trips():
    cmos, clock, rd, wr = make()
    wr(0x0F, 0x00)
    wr(0x40, 0xA5)
    assert rd(0x40) == 0xA5
    bus_state = cmos.snapshot()
    other, _, rd2, _ = make(clock=clock)
    other.restore(bus_state)
    assert rd2(0x40) == 0xA5 and rd2(0x04) == 0x13
    cmos.set_byte(0x12, 0xF0)               # disk types, as the IDE model will set them
    assert cmos.get_byte(0x12) == 0xF0
    cmos.reset()
    assert cmos.get_byte(0x12) == 0xF0 and cmos.get_byte(0x40) == 0xA5


def test_index_port_reads_ff():
    cmos, _, _, _ = make()
    assert cmos.read(0, 1) == 0xFF
