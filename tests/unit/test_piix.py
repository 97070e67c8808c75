"""PIIX3 ISA bridge (PIRQ routing) and PIIX4 PM (PM1 registers, SCI, sleep, PM timer, PMBA
moves, APM port, GPE0), alone and wired by build_platform as SeaBIOS and an ACPI OS use them."""

import msgpack
import pytest

from services.hw.chipset import piix
from services.hw.chipset.piix import (
    ACPI_DISABLE,
    ACPI_ENABLE,
    CNT_SCI_EN,
    EN_PWRBTN,
    EN_TMR,
    PM1_CNT,
    PM1_EN,
    PM1_STS,
    PM_TIMER_HZ,
    PM_TMR,
    SCI_IRQ,
    STS_PWRBTN,
    STS_TMR,
    STS_WAK,
    ApmControl,
    Piix3IsaBridge,
    Piix4Pm,
    pirq_of,
)
from services.hw.memory import GuestMemory, MiB
from services.ipc.shm import PrivateRegion
from services.vcpu.platform import build_platform


class Clock:
    def __init__(self):
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns


class Pm:
    def __init__(self):
        self.clock = Clock()
        self.irqs, self.offs, self.moves = [], [], []
        self.pm = Piix4Pm(irq=lambda line, level: self.irqs.append((line, level)),
                          poweroff=lambda: self.offs.append(1), clock_ns=self.clock,
                          on_io_move=lambda old, new: self.moves.append((old, new)))

    def setup_like_seabios(self, base=0xB000):
        self.pm.config_write(0x40, 4, base | 1)
        self.pm.config_write(0x80, 1, 0x01)


@pytest.fixture
def pm():
    return Pm()


# -- ISA bridge -----------------------------------------------------------------------------------
def test_isa_bridge_identity_and_pirq_reset_state():
    bridge = Piix3IsaBridge()
    assert bridge.config_read(0x00, 4) == 0x70008086
    assert bridge.config_read(0x08, 4) >> 8 == 0x060100
    assert bridge.config_read(0x0E, 1) == 0x80                 # multifunction
    assert bridge.config_read(0x60, 4) == 0x80808080
    assert [bridge.pci_irq(3, pin) for pin in (1, 2, 3, 4)] == [None] * 4


def test_pirq_routing_follows_seabios_rotation():
    changes = []
    bridge = Piix3IsaBridge(on_route_change=changes.append)
    bridge.config_write(0x60, 4, 0x0B0B0A0A)                   # what SeaBIOS programs: 10,10,11,11
    assert changes == [bytes((10, 10, 11, 11))]
    assert bridge.config_read(0x60, 4) == 0x0B0B0A0A
    # slot 1 INTA -> PIRQA, slot 2 INTA -> PIRQB, slot 3 INTA -> PIRQC, slot 4 INTA -> PIRQD, ...
    assert [pirq_of(slot, 1) for slot in (1, 2, 3, 4, 5)] == [0, 1, 2, 3, 0]
    assert [pirq_of(3, pin) for pin in (1, 2, 3, 4)] == [2, 3, 0, 1]
    assert bridge.pci_irq(3, 1) == 11 and bridge.pci_irq(2, 1) == 10 and bridge.pci_irq(1, 4) == 11
    bridge.config_write(0x61, 1, 0x8A)                         # PIRQB disabled
    assert bridge.pci_irq(2, 1) is None
    bridge.config_write(0x62, 1, 0x72)                         # reserved bits dropped: IRQ 2 is reserved
    assert bridge.config_read(0x62, 1) == 0x02 and bridge.pirq_irq(2) is None
    with pytest.raises(ValueError):
        pirq_of(1, 5)
    bridge.reset()
    assert bridge.config_read(0x60, 4) == 0x80808080 and changes[-1] == bytes((0x80,) * 4)


def test_isa_bridge_snapshot_restore():
    bridge = Piix3IsaBridge()
    bridge.config_write(0x60, 4, 0x0B0B0A0A)
    other = Piix3IsaBridge()
    other.restore(bridge.snapshot())
    assert other.pci_irq(3, 1) == 11


# -- PM function ----------------------------------------------------------------------------------
def test_pm_identity_and_config_registers(pm):
    f = pm.pm
    assert f.config_read(0x00, 4) == 0x71138086
    assert f.config_read(0x08, 4) >> 8 == 0x068000
    assert f.config_read(0x3C, 2) == 0x0109                    # line 9, pin INTA
    assert f.config_read(0x40, 4) == 0x00000001
    assert f.config_read(0x58, 4) & (1 << 25)                  # SMM "already set up": SeaBIOS skips it
    f.config_write(0x40, 4, 0xFFFFFFFF)
    assert f.config_read(0x40, 4) == 0x0000FFC1
    f.config_write(0x90, 4, 0xB101)
    f.config_write(0xD2, 1, 0x09)
    assert f.config_read(0x90, 4) == 0xB101 and f.config_read(0xD2, 1) == 0x09


def test_pmba_moves_the_io_block(pm):
    pm.pm.config_write(0x40, 4, 0xB001)
    assert pm.moves == [] and pm.pm.io_base is None            # PMREGMISC still off
    pm.pm.config_write(0x80, 1, 0x01)
    assert pm.moves == [(None, 0xB000)]
    pm.pm.config_write(0x40, 4, 0x0601)
    assert pm.moves[-1] == (0xB000, 0x0600)
    pm.pm.config_write(0x40, 4, 0x0601)
    assert len(pm.moves) == 2                                  # unchanged: no callback
    pm.pm.config_write(0x80, 1, 0x00)
    assert pm.moves[-1] == (0x0600, None)
    pm.pm.config_write(0x80, 1, 0x01)
    pm.pm.reset()
    assert pm.moves[-1] == (0x0600, None)


def test_pm1_status_write_one_to_clear_and_enable(pm):
    f = pm.pm
    f.power_button()
    assert f.pm_read(PM1_STS, 2) & STS_PWRBTN
    f.pm_write(PM1_STS, 2, 0x0001)                             # other bits: untouched
    assert f.pm_read(PM1_STS, 2) & STS_PWRBTN
    f.pm_write(PM1_STS, 2, STS_PWRBTN)
    assert not f.pm_read(PM1_STS, 2) & STS_PWRBTN
    f.pm_write(PM1_EN, 2, 0xFFFF)
    assert f.pm_read(PM1_EN, 2) == 0x0521                      # TMR, GBL, PWRBTN, RTC
    f.pm_write(PM1_STS, 4, (EN_TMR << 16) | 0)                 # dword write: STS and EN at once
    assert f.pm_read(PM1_EN, 2) == EN_TMR
    assert f.pm_read(PM1_STS, 4) >> 16 == EN_TMR


def test_power_button_raises_sci_only_when_enabled(pm):
    f = pm.pm
    assert f.power_button() is False and pm.irqs == []         # ACPI not enabled yet
    f.pm_write(PM1_STS, 2, STS_PWRBTN)
    ApmControl(f).write(0, 1, ACPI_ENABLE)                     # the OS takes over (FADT SMI_CMD)
    assert f.pm_read(PM1_CNT, 2) & CNT_SCI_EN
    f.pm_write(PM1_EN, 2, EN_PWRBTN)
    assert pm.irqs == []
    assert f.power_button() is True
    assert pm.irqs == [(SCI_IRQ, True)]
    f.pm_write(PM1_STS, 2, STS_PWRBTN)                         # the OS acknowledges: line drops
    assert pm.irqs == [(SCI_IRQ, True), (SCI_IRQ, False)]
    f.power_button()
    ApmControl(f).write(0, 1, ACPI_DISABLE)
    assert pm.irqs[-1] == (SCI_IRQ, False)
    assert not f.pm_read(PM1_CNT, 2) & CNT_SCI_EN


def test_slp_en_with_s5_powers_off(pm):
    f = pm.pm
    f.pm_write(PM1_CNT, 2, CNT_SCI_EN | (0 << 10))
    assert pm.offs == []
    f.pm_write(PM1_CNT, 2, CNT_SCI_EN | (0 << 10) | 0x2000)
    assert pm.offs == [1]
    assert not f.pm_read(PM1_CNT, 2) & 0x2000                  # SLP_EN reads as 0
    f.pm_write(PM1_CNT, 2, (2 << 10) | 0x2000)                 # S4 (hibernate) is off too
    assert pm.offs == [1, 1]


def test_s3_without_support_wakes_at_once(pm):
    f = pm.pm
    f.pm_write(PM1_CNT, 2, (1 << 10) | 0x2000)
    assert pm.offs == [] and f.pm_read(PM1_STS, 2) & STS_WAK
    assert (f.pm_read(PM1_CNT, 2) >> 10) & 7 == 1


def test_pm_timer_runs_at_3_579545_mhz_and_wraps_at_24_bits(pm):
    f = pm.pm
    start = f.pm_read(PM_TMR, 4)
    pm.clock.ns += 1_000_000_000
    assert f.pm_read(PM_TMR, 4) - start == PM_TIMER_HZ
    pm.clock.ns += 10 * 1_000_000_000                          # 35.8 M ticks: past 2^24
    value = f.pm_read(PM_TMR, 4)
    assert value < 1 << 24 and value == (11 * PM_TIMER_HZ) & 0xFFFFFF
    assert f.pm_read(PM_TMR + 2, 2) == value >> 16             # narrow reads see the same count


def test_timer_carry_sets_tmr_sts_and_sci_on_poll(pm):
    f = pm.pm
    f.apm_command(ACPI_ENABLE)
    f.pm_write(PM1_EN, 2, EN_TMR)
    assert not f.pm_read(PM1_STS, 2) & STS_TMR
    pm.clock.ns += (1 << 23) * 1_000_000_000 // PM_TIMER_HZ + 1_000_000
    f.poll()
    assert pm.irqs == [(SCI_IRQ, True)]
    assert f.pm_read(PM1_STS, 2) & STS_TMR
    f.pm_write(PM1_STS, 2, STS_TMR)
    assert pm.irqs[-1] == (SCI_IRQ, False)


def test_gpe0_block_counts_toward_the_sci(pm):
    f = pm.pm
    f.apm_command(ACPI_ENABLE)
    f.gpe0.write(2, 2, 0x0002)
    assert f.gpe0.read(0, 4) == 0x00020000
    f.gpe0.sts |= 0x0002
    f.poll()
    assert pm.irqs == [(SCI_IRQ, True)]
    f.gpe0.write(0, 1, 0x02)
    assert pm.irqs[-1] == (SCI_IRQ, False) and f.gpe0.read(0, 2) == 0


def test_pm_snapshot_restore_continues_the_timer():
    a = Pm()
    a.setup_like_seabios()
    a.pm.apm_command(ACPI_ENABLE)
    a.pm.pm_write(PM1_EN, 2, EN_PWRBTN)
    a.clock.ns += 2_000_000_000
    before = a.pm.pm_read(PM_TMR, 4)
    state = a.pm.snapshot()
    b = Pm()
    b.clock.ns = 99 * 1_000_000_000                            # another host's clock
    b.pm.restore(state)
    assert b.moves == [(None, 0xB000)]
    assert abs(b.pm.pm_read(PM_TMR, 4) - before) <= 1
    assert b.pm.pm_read(PM1_EN, 2) == EN_PWRBTN and b.pm.pm_read(PM1_CNT, 2) & CNT_SCI_EN
    b.clock.ns += 1_000_000_000
    assert abs(b.pm.pm_read(PM_TMR, 4) - before - PM_TIMER_HZ) <= 1


def test_apm_ports_and_state(pm):
    apm = ApmControl(pm.pm)
    apm.write(1, 1, 0x5A)
    apm.write(0, 1, 0x00)
    assert apm.read(0, 2) == 0x5A00
    other = ApmControl(pm.pm)
    other.restore(apm.snapshot())
    assert other.read(0, 2) == 0x5A00
    apm.reset()
    assert apm.read(0, 2) == 0


# -- wired by the platform ------------------------------------------------------------------------
def cfg(dev: int, fn: int, reg: int) -> int:
    return 0x80000000 | dev << 11 | fn << 8 | (reg & 0xFC)


class Platform:
    def __init__(self, **kwargs):
        self.irqs, self.offs = [], []
        self.clock = Clock()
        memory = GuestMemory(PrivateRegion(32 * MiB), b"\0" * (128 << 10))
        self.bus = build_platform(memory, reset=lambda: None, poweroff=lambda: self.offs.append(1),
                                  set_irq=lambda line, level: self.irqs.append((line, level)),
                                  clock_ns=self.clock, **kwargs)

    def cfg_write(self, dev, fn, reg, size, value):
        self.bus.pio_write(0xCF8, 4, cfg(dev, fn, reg))
        self.bus.pio_write(0xCFC + (reg & 3), size, value)

    def cfg_read(self, dev, fn, reg, size):
        self.bus.pio_write(0xCF8, 4, cfg(dev, fn, reg))
        return self.bus.pio_read(0xCFC + (reg & 3), size)


def test_platform_without_acpi_has_the_isa_bridge_and_no_pm():
    p = Platform()
    assert p.cfg_read(1, 0, 0, 4) == 0x70008086
    assert p.cfg_read(1, 3, 0, 4) == 0xFFFFFFFF
    assert "apm" not in p.bus.devices() and "gpe0" not in p.bus.devices()
    assert {"i8042", "i8042-command"} <= set(p.bus.devices())


def test_platform_pm_block_follows_pmba_and_powers_off():
    p = Platform(acpi=True)
    assert p.cfg_read(1, 3, 0, 4) == 0x71138086
    assert p.bus.pio_read(0xB008, 4) == 0xFFFFFFFF             # not decoded before PMBA is set
    p.cfg_write(1, 3, 0x40, 4, 0xB001)
    p.cfg_write(1, 3, 0x80, 1, 0x01)
    first = p.bus.pio_read(0xB008, 4)
    p.clock.ns += 1_000_000
    assert p.bus.pio_read(0xB008, 4) - first == PM_TIMER_HZ // 1000
    p.cfg_write(1, 3, 0x40, 4, 0x0601)                         # the table-loader base QEMU uses
    assert p.bus.pio_read(0xB008, 4) == 0xFFFFFFFF
    assert p.bus.pio_read(0x608, 4) != 0xFFFFFFFF

    p.bus.pio_write(0xB2, 1, ACPI_ENABLE)
    assert p.bus.pio_read(0x604, 2) & CNT_SCI_EN
    p.bus.pio_write(0x602, 2, EN_PWRBTN)
    pm = p.bus.device("apm").pm
    assert pm.power_button() is True and p.irqs == [(SCI_IRQ, True)]
    p.bus.pio_write(0x600, 2, STS_PWRBTN)
    assert p.irqs[-1] == (SCI_IRQ, False)
    p.bus.pio_write(0xAFE2, 2, 0x0001)
    assert p.bus.pio_read(0xAFE0, 4) == 0x00010000

    p.bus.device("i8042").keyboard.key(0x1E)
    state = msgpack.unpackb(msgpack.packb(p.bus.snapshot()))   # plain data, as save-state stores it
    q = Platform(acpi=True)
    q.bus.restore(state)
    assert q.bus.pio_read(0x60, 1) == 0x1C
    assert q.bus.pio_read(0x604, 2) & CNT_SCI_EN and q.bus.pio_read(0xAFE2, 2) == 1

    p.bus.pio_write(0x604, 2, CNT_SCI_EN | 0x2000)             # _S5: SLP_TYP 0
    assert p.offs == [1]
    p.bus.reset()
    assert p.bus.pio_read(0x604, 2) == 0xFFFF                  # PMREGMISC back to off
    assert p.cfg_read(1, 0, 0x60, 4) == 0x80808080


def test_platform_keyboard_interrupts_reach_set_irq():
    p = Platform()
    p.bus.pio_write(0x64, 1, 0x60)
    p.bus.pio_write(0x60, 1, 0x41)                             # XLATE | KBDINT
    p.bus.device("i8042").keyboard.key(0x1C)
    assert p.irqs == [(1, True)]
    assert p.bus.pio_read(0x60, 1) == 0x1C
    assert p.irqs == [(1, True), (1, False)]


def test_platform_pm_io_window_passes_other_ports_to_the_fallback():
    seen = []

    class Far:
        def pio_read(self, port, size):
            seen.append(port)
            return 0x42

        def pio_write(self, port, size, value):
            seen.append((port, value))

    p = Platform(acpi=True, fallback=Far())
    assert p.bus.pio_read(0x3F8, 1) == 0x42
    p.bus.pio_write(0x3F8, 1, 7)
    assert seen == [0x3F8, (0x3F8, 7)]
    assert piix.PM_IO_SIZE == 64
