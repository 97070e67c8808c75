"""PCI configuration mechanism #1 and the i440FX host bridge, accessed as SeaBIOS does (src/hw/pci.c)."""

import pytest

from services.hw.bus import Bus
from services.hw.chipset.pci import I440fxHostBridge, PciConfigIo, PciFunction, PciRoot


def cfg_address(dev, fn, reg, bus=0):
    return 0x80000000 | bus << 16 | dev << 11 | fn << 8 | (reg & 0xFC)


@pytest.fixture
def pci():
    pam_changes = []
    root = PciRoot()
    root.add(I440fxHostBridge(pam_changes.append), 0)
    nic = PciFunction(0x8086, 0x100E, 0x020000, revision=0x03, interrupt_pin=1)
    nic.add_bar(0, 0x20000)                       # 128 KiB MMIO
    nic.add_bar(1, 0x40, "io")
    nic.add_bar(2, 0x4000, "mem64", prefetchable=True)
    root.add(nic, 3)
    bus = Bus()
    bus.register(PciConfigIo(root), "pio", 0xCF8, 8, name="pci")

    def readl(dev, fn, reg):
        bus.pio_write(0xCF8, 4, cfg_address(dev, fn, reg))
        return bus.pio_read(0xCFC, 4)

    def readw(dev, fn, reg):
        bus.pio_write(0xCF8, 4, cfg_address(dev, fn, reg))
        return bus.pio_read(0xCFC + (reg & 2), 2)

    def readb(dev, fn, reg):
        bus.pio_write(0xCF8, 4, cfg_address(dev, fn, reg))
        return bus.pio_read(0xCFC + (reg & 3), 1)

    def writel(dev, fn, reg, value):
        bus.pio_write(0xCF8, 4, cfg_address(dev, fn, reg))
        bus.pio_write(0xCFC, 4, value)

    def writeb(dev, fn, reg, value):
        bus.pio_write(0xCF8, 4, cfg_address(dev, fn, reg))
        bus.pio_write(0xCFC + (reg & 3), 1, value)

    class Access:
        pass

    a = Access()
    a.bus, a.root, a.nic, a.pam_changes = bus, root, nic, pam_changes
    a.readl, a.readw, a.readb, a.writel, a.writeb = readl, readw, readb, writel, writeb
    return a


def test_host_bridge_ids(pci):
    assert pci.readl(0, 0, 0x00) == 0x12378086
    assert pci.readw(0, 0, 0x00) == 0x8086 and pci.readw(0, 0, 0x02) == 0x1237
    # qemu_detect: subsystem 1af4:1100 means "Running on QEMU (i440fx)"
    assert pci.readw(0, 0, 0x2C) == 0x1AF4 and pci.readw(0, 0, 0x2E) == 0x1100
    assert pci.readl(0, 0, 0x08) == 0x06000002       # class 06/00/00, revision 2
    assert pci.readb(0, 0, 0x0E) == 0x00             # header type 0, single function
    assert pci.readb(0, 0, 0x0B) == 0x06 and pci.readb(0, 0, 0x0A) == 0x00


def test_absent_functions_read_all_ones(pci):
    assert pci.readl(1, 0, 0) == 0xFFFFFFFF
    assert pci.readl(0, 1, 0) == 0xFFFFFFFF
    assert pci.readw(31, 7, 0) == 0xFFFF
    pci.bus.pio_write(0xCF8, 4, cfg_address(0, 0, 0, bus=1))
    assert pci.bus.pio_read(0xCFC, 4) == 0xFFFFFFFF
    pci.bus.pio_write(0xCF8, 4, 0x00000000)         # enable bit clear
    assert pci.bus.pio_read(0xCFC, 4) == 0xFFFFFFFF
    pci.writel(5, 0, 0x04, 0xFFFFFFFF)              # dropped, no error


def test_address_register_reads_back_as_a_dword_only(pci):
    pci.bus.pio_write(0xCF8, 4, 0x80001803)
    assert pci.bus.pio_read(0xCF8, 4) == 0x80001800   # bits 1:0 read as zero
    assert pci.bus.pio_read(0xCF8, 1) == 0xFF          # Linux's type-2 probe must not match
    assert pci.bus.pio_read(0xCFA, 1) == 0xFF


def test_byte_and_word_accesses_at_cfc_plus_n(pci):
    assert [pci.readb(3, 0, r) for r in range(4)] == [0x86, 0x80, 0x0E, 0x10]
    assert pci.readw(3, 0, 0x02) == 0x100E
    assert pci.readb(3, 0, 0x3D) == 1                # INTA
    pci.writeb(3, 0, 0x3C, 11)                       # SeaBIOS writes the IRQ line
    assert pci.readb(3, 0, 0x3C) == 11
    assert pci.readl(3, 0, 0x3C) == 0x0000010B


def test_bar_sizing(pci):
    # pci_bios_get_bar: save, write ~0, read the mask, restore
    old = pci.readl(3, 0, 0x10)
    pci.writel(3, 0, 0x10, 0xFFFFFFFF)
    assert pci.readl(3, 0, 0x10) == 0xFFFE0000       # 128 KiB memory BAR
    pci.writel(3, 0, 0x10, old)
    pci.writel(3, 0, 0x14, 0xFFFFFFFF)
    assert pci.readl(3, 0, 0x14) == 0xFFFFFFC1       # 64-byte I/O BAR, bit 0 = I/O
    pci.writel(3, 0, 0x18, 0xFFFFFFFF)
    pci.writel(3, 0, 0x1C, 0xFFFFFFFF)
    assert pci.readl(3, 0, 0x18) == 0xFFFFC00C       # 64-bit, prefetchable
    assert pci.readl(3, 0, 0x1C) == 0xFFFFFFFF
    assert pci.readl(3, 0, 0x20) == 0 and pci.readl(3, 0, 0x24) == 0   # no BAR: not writable
    pci.writel(3, 0, 0x10, 0xFEBC0000)
    pci.writel(3, 0, 0x14, 0xC041)
    pci.writel(3, 0, 0x18, 0x0)
    pci.writel(3, 0, 0x1C, 0x1)
    assert pci.nic.bar_address(0) == 0xFEBC0000
    assert pci.nic.bar_address(1) == 0xC040
    assert pci.nic.bar_address(2) == 0x1_0000_0000


def test_read_only_identity_and_command_mask(pci):
    pci.writel(3, 0, 0x00, 0)
    assert pci.readl(3, 0, 0x00) == 0x100E8086
    pci.writel(3, 0, 0x04, 0xFFFFFFFF)
    assert pci.readw(3, 0, 0x04) == 0x0547
    assert pci.nic.command & 0x7 == 0x7


def test_bar_declaration_errors():
    fn = PciFunction(0x1234, 0x1111, 0x030000)
    with pytest.raises(ValueError, match="power of two"):
        fn.add_bar(0, 3000)
    fn.add_bar(0, 16 << 20, prefetchable=True)
    with pytest.raises(ValueError, match="BAR 0 is not free"):
        fn.add_bar(0, 4096)
    with pytest.raises(ValueError, match="unknown BAR kind"):
        fn.add_bar(1, 4096, "rom")
    root = PciRoot()
    root.add(fn, 2)
    with pytest.raises(ValueError, match="00:02.0 is already taken"):
        root.add(fn, 2)


def test_pam_registers_as_seabios_unlocks_and_locks_them(pci):
    # make_bios_writable_intel: read dwords at 0x58 and 0x5C, set PAM 0x30 / 0x33 x6, write back
    lo, hi = pci.readl(0, 0, 0x58), pci.readl(0, 0, 0x5C)
    data = bytearray(lo.to_bytes(4, "little") + hi.to_bytes(4, "little"))
    assert data[1] & 0x10 == 0                       # no RAM behind the F-segment at power-on
    data[1:8] = bytes([0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33])
    pci.writel(0, 0, 0x58, int.from_bytes(data[:4], "little"))
    pci.writel(0, 0, 0x5C, int.from_bytes(data[4:], "little"))
    assert pci.readb(0, 0, 0x59) == 0x30 and pci.readb(0, 0, 0x5F) == 0x33
    assert pci.readb(0, 0, 0x58) == 0x00             # not a PAM register: stays read-only
    assert pci.pam_changes[-1] == bytes([0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33])
    pci.writeb(0, 0, 0x59, 0x10)                     # make_bios_readonly
    assert pci.pam_changes[-1][0] == 0x10
    count = len(pci.pam_changes)
    pci.writeb(0, 0, 0x59, 0x10)                     # unchanged: no callback
    assert len(pci.pam_changes) == count


def test_snapshot_restore_and_reset(pci):
    pci.writel(3, 0, 0x10, 0xFEBC0000)
    pci.writeb(0, 0, 0x5A, 0x33)
    pci.bus.pio_write(0xCF8, 4, cfg_address(3, 0, 0x10))
    state = pci.bus.snapshot()
    assert set(state["pci"]["functions"]) == {"00:00.0", "00:03.0"}

    pci.bus.reset()
    assert pci.nic.bar_address(0) == 0 and pci.pam_changes[-1] == bytes(7)
    assert pci.bus.pio_read(0xCF8, 4) == 0

    pci.bus.restore(state)
    assert pci.bus.pio_read(0xCFC, 4) == 0xFEBC0000   # the address register came back too
    assert pci.pam_changes[-1] == bytes([0, 0x33, 0, 0, 0, 0, 0])

    wrong = PciRoot()
    wrong.add(PciFunction(0x1234, 0x1111, 0x030000), 0)
    with pytest.raises(ValueError, match="differ from this VM"):
        wrong.restore(state["pci"]["functions"])
    other = PciFunction(0x1234, 0x1111, 0x030000)
    with pytest.raises(ValueError, match="not this one"):
        other.restore(state["pci"]["functions"]["00:03.0"])
