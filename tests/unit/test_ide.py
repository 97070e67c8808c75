"""The PIIX IDE controller with ATA disks: SeaBIOS's probe, IDENTIFY, PIO and DMA transfers, LBA48,
multiple mode, resets and signatures, the interrupt line, state round trips, the PCI function."""

import struct

import pytest

from services.hw.bus import Bus
from services.hw.chipset.pci import COMMAND, PciConfigIo, PciRoot
from services.hw.storage.atapi import CdromDrive
from services.hw.storage.ide.controller import IdeController
from services.hw.storage.ide.disk import HardDisk, cmos_disk_bytes
from services.hw.storage.ide.pci import PiixIdeFunction, boot_path
from services.images.backend import ImageError

P = 0x1F0          # primary command block
CTL = 0x3F6        # primary control port
BM = 0xC000        # where the tests map the bus-master ports
DATA, ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS = range(8)


class MemoryDisk:
    """A sparse in-memory BlockBackend."""

    def __init__(self, sectors: int, sector_size: int = 512, readonly: bool = False, fill=None):
        self.path = "memory.img"
        self.size = sectors * sector_size
        self.sector_size = sector_size
        self.readonly = readonly
        self.blocks: dict[int, bytes] = {}
        self.fill = fill or (lambda index: bytes(sector_size))
        self.flushes = 0

    def read(self, offset, length):
        assert offset % self.sector_size == 0 and length % self.sector_size == 0
        if offset + length > self.size:
            raise ImageError("read past the end")
        first = offset // self.sector_size
        count = length // self.sector_size
        return b"".join(self.blocks.get(i) or self.fill(i) for i in range(first, first + count))

    def write(self, offset, data):
        assert not self.readonly
        first = offset // self.sector_size
        for i in range(len(data) // self.sector_size):
            self.blocks[first + i] = bytes(data[i * self.sector_size:(i + 1) * self.sector_size])

    def flush(self):
        self.flushes += 1

    def close(self):
        pass


def pattern(index: int) -> bytes:
    """Sector `index` of a test disk: its number, then bytes that differ per sector."""
    return struct.pack("<Q", index) + bytes((index + i) & 0xFF for i in range(504))


class FakeMemory:
    def __init__(self, size=1 << 20):
        self.ram = bytearray(size)

    def read(self, gpa, size):
        if gpa + size > len(self.ram):
            raise ValueError("not RAM")
        return bytes(self.ram[gpa:gpa + size])

    def write(self, gpa, data):
        if gpa + len(data) > len(self.ram):
            raise ValueError("not RAM")
        self.ram[gpa:gpa + len(data)] = data


class Machine:
    def __init__(self, master=None, slave=None, secondary_master=None):
        self.lines: list[tuple[int, bool]] = []
        self.dma_writes: list[tuple[int, int]] = []
        self.memory = FakeMemory()
        self.ide = IdeController(lambda ch, level: self.lines.append((ch, level)), memory=self.memory,
                                 on_dma_write=lambda gpa, n: self.dma_writes.append((gpa, n)))
        self.ide.attach(0, 0, master)
        self.ide.attach(0, 1, slave)
        self.ide.attach(1, 0, secondary_master)
        self.bus = Bus()
        self.ide.register(self.bus)
        self.bus.register(self.ide.bus_master, "pio", BM, 16)

    def inb(self, port):
        return self.bus.pio_read(port, 1)

    def outb(self, port, value):
        self.bus.pio_write(port, 1, value)

    def status(self):
        return self.inb(P + STATUS)

    def command(self, opcode, *, count=0, lba=0, device=0xE0, feature=0, lba48=False):
        if lba48:
            self.outb(P + ERROR, 0)
            self.outb(P + COUNT, count >> 8)
            self.outb(P + LBA_LOW, (lba >> 24) & 0xFF)
            self.outb(P + LBA_MID, (lba >> 32) & 0xFF)
            self.outb(P + LBA_HIGH, (lba >> 40) & 0xFF)
        self.outb(P + DEVICE, device | ((lba >> 24) & 0x0F if not lba48 else 0))
        self.outb(P + ERROR, feature)
        self.outb(P + COUNT, count & 0xFF)
        self.outb(P + LBA_LOW, lba & 0xFF)
        self.outb(P + LBA_MID, (lba >> 8) & 0xFF)
        self.outb(P + LBA_HIGH, (lba >> 16) & 0xFF)
        self.outb(P + STATUS, opcode)

    def read_words(self, count):
        return b"".join(self.bus.pio_read(P, 2).to_bytes(2, "little") for _ in range(count))

    def insw(self, count):
        return self.bus.pio_read_string(P, 2, count)

    def identify(self, opcode=0xEC):
        self.command(opcode, device=0xA0)
        return struct.unpack("<256H", self.insw(256))


def disk(sectors=2048, **kwargs):
    return HardDisk(MemoryDisk(sectors, fill=pattern, **kwargs), model="HEADBOX HARDDISK", serial="SN123")


# -- probing -------------------------------------------------------------------------------------

def seabios_probe(m: Machine, slave: int) -> str | None:
    """ata_detect for one device: register check, reset once, IDENTIFY PACKET then IDENTIFY."""
    dh = 0xB0 if slave else 0xA0
    m.outb(P + DEVICE, dh)
    assert not m.status() & 0x80
    readback = m.inb(P + DEVICE)
    m.outb(P + COUNT, 0x55)
    m.outb(P + LBA_LOW, 0xAA)
    if (m.inb(P + COUNT), m.inb(P + LBA_LOW), readback) != (0x55, 0xAA, dh):
        return None
    if not slave:
        m.outb(CTL, 0x0E)                  # HD15 | nIEN | SRST
        m.outb(CTL, 0x0A)
        m.outb(P + DEVICE, dh)
    m.outb(P + DEVICE, dh)
    m.outb(P + STATUS, 0xA1)
    st = m.status()
    if not st & 0x01 and st & 0x08:
        m.insw(256)
        return "atapi"
    if not st:
        return None
    assert st & 0x40 and m.inb(P + ERROR) == 0x04
    m.outb(P + STATUS, 0xEC)
    st = m.status()
    if st & 0x01:
        return None
    m.insw(256)
    assert m.status() & 0x89 == 0
    return "ata"


def test_seabios_detects_a_lone_master_disk_and_skips_the_slave():
    m = Machine(master=disk())
    assert seabios_probe(m, 0) == "ata"
    words = m.identify()
    assert words[93] & 0xDF61 == 0x4041         # device 0 answers for the absent device 1
    assert seabios_probe(m, 1) is None           # and its registers read back as nothing


def test_seabios_detects_disk_and_cdrom_on_one_channel():
    m = Machine(master=disk(), slave=CdromDrive())
    assert seabios_probe(m, 0) == "ata"
    m.outb(P + DEVICE, 0xA0)
    assert m.identify()[93] & 0xDF61 != 0x4041
    assert seabios_probe(m, 1) == "atapi"


def test_empty_channel_reads_nothing():
    m = Machine()
    assert m.status() == 0
    m.outb(P + COUNT, 0x55)
    assert m.inb(P + COUNT) == 0
    m.outb(P + STATUS, 0xEC)
    assert m.status() == 0 and m.lines == []


# -- IDENTIFY ------------------------------------------------------------------------------------

def ata_text(words, first, count):
    return b"".join(struct.pack(">H", w) for w in words[first:first + count]).decode().rstrip()


def test_identify_words():
    m = Machine(master=disk(sectors=1 << 21))          # 1 GiB
    w = m.identify()
    assert w[0] == 0x0040
    assert (w[1], w[3], w[6]) == (2080, 16, 63)
    assert ata_text(w, 27, 20) == "HEADBOX HARDDISK"
    assert ata_text(w, 10, 10) == "SN123"
    assert ata_text(w, 23, 4) == "1.0"
    assert w[47] & 0xFF == 16 and w[47] >> 8 == 0x80
    assert w[49] & 0x0300 == 0x0300                  # LBA and DMA
    assert w[53] & 0x0007 == 0x0007
    assert w[60] | w[61] << 16 == 1 << 21
    assert w[63] & 0x07 == 0x07 and w[88] & 0x3F == 0x3F
    assert w[83] & (1 << 10) and w[83] & 0xC000 == 0x4000
    assert w[86] & (1 << 10)
    assert w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48 == 1 << 21
    raw = struct.pack("<256H", *w)
    assert raw[510] == 0xA5 and sum(raw) & 0xFF == 0
    assert m.status() == 0x50


def test_identify_caps_lba28_and_chs_for_a_large_disk():
    m = Machine(master=disk(sectors=1 << 40))
    w = m.identify()
    assert w[60] | w[61] << 16 == 0x0FFFFFFF
    assert (w[1], w[3], w[6]) == (16383, 16, 63)
    assert w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48 == 1 << 40


def test_set_features_transfer_mode_shows_in_identify():
    m = Machine(master=disk())
    m.command(0xEF, feature=0x03, count=0x42)        # UDMA mode 2
    assert m.status() == 0x50
    w = m.identify()
    assert w[88] >> 8 == 0x04 and w[63] >> 8 == 0
    m.command(0xEF, feature=0x03, count=0x50)        # no such mode
    assert m.status() & 0x01 and m.inb(P + ERROR) == 0x04


# -- PIO -----------------------------------------------------------------------------------------

def test_read_sectors_word_by_word_with_an_interrupt_per_sector():
    m = Machine(master=disk())
    m.outb(CTL, 0x00)
    m.command(0x20, count=2, lba=5)
    assert m.lines == [(0, True)] and m.bus.pio_read(CTL, 1) == 0x58   # alt status: no clear
    assert m.lines == [(0, True)]
    assert m.status() == 0x58 and m.lines[-1] == (0, False)
    assert m.read_words(256) == pattern(5)
    assert m.lines[-1] == (0, True) and m.status() == 0x58
    assert m.read_words(256) == pattern(6)
    assert m.status() == 0x50
    assert m.lines == [(0, True), (0, False), (0, True), (0, False)]
    assert (m.inb(P + LBA_LOW), m.inb(P + COUNT)) == (6, 0)


def test_read_sectors_with_rep_insw_and_32_bit_port():
    m = Machine(master=disk())
    m.command(0x20, count=3, lba=100)
    assert m.insw(256) == pattern(100)
    assert m.bus.pio_read_string(P, 4, 128) == pattern(101)
    value = m.bus.pio_read(P, 4)
    assert value.to_bytes(4, "little") == pattern(102)[:4]
    assert m.bus.pio_read_string(P, 2, 254) == pattern(102)[4:]
    assert m.status() == 0x50


def test_one_rep_insw_may_span_blocks():
    m = Machine(master=disk())
    m.command(0x20, count=2, lba=7)
    assert m.insw(512) == pattern(7) + pattern(8)
    assert m.status() == 0x50


def test_write_sectors_with_rep_outsw():
    backend = MemoryDisk(64)
    m = Machine(master=HardDisk(backend))
    m.command(0x30, count=2, lba=10)
    assert m.status() == 0x58 and m.lines == []          # DRQ for the first block, no interrupt
    m.bus.pio_write_string(P, 2, b"\x11" * 512)
    assert m.lines == [(0, True)] and m.status() == 0x58
    for i in range(128):
        m.bus.pio_write(P, 4, 0x22222222)
    assert m.status() == 0x50 and m.lines[-2:] == [(0, True), (0, False)]
    assert backend.blocks == {10: b"\x11" * 512, 11: b"\x22" * 512}


def test_write_to_readonly_disk_aborts():
    m = Machine(master=HardDisk(MemoryDisk(64, readonly=True)))
    m.command(0x30, count=1, lba=0)
    assert m.status() == 0x41 and m.inb(P + ERROR) == 0x04


def test_read_beyond_end_is_idnf():
    m = Machine(master=disk(sectors=16))
    m.command(0x20, count=2, lba=15)
    assert m.status() == 0x41 and m.inb(P + ERROR) == 0x10


def test_chs_addressing_uses_the_translation():
    m = Machine(master=disk())
    # cylinder 1, head 2, sector 3 with 16 heads and 63 sectors: (1*16 + 2)*63 + 2
    m.command(0x20, count=1, lba=1 << 8 | 3, device=0xA2)
    assert m.insw(256) == pattern((1 * 16 + 2) * 63 + 2)
    m.command(0x91, count=32, device=0xA3)                # INITIALIZE DEVICE PARAMETERS: 4 heads, 32 spt
    assert m.status() == 0x50
    m.command(0x20, count=1, lba=2 << 8 | 1, device=0xA1)
    assert m.insw(256) == pattern((2 * 4 + 1) * 32)
    assert m.identify()[55:57] == (4, 32)


def test_lba48_read_and_write_above_128_gib():
    backend = MemoryDisk(1 << 36, fill=pattern)
    m = Machine(master=HardDisk(backend))
    lba = (1 << 32) + 12345
    m.command(0x24, count=2, lba=lba, device=0x40, lba48=True)
    assert m.insw(512) == pattern(lba) + pattern(lba + 1)
    assert m.status() == 0x50
    m.outb(CTL, 0x80)                                      # HOB: the high bytes of the last sector
    assert (m.inb(P + LBA_LOW), m.inb(P + LBA_MID)) == (0, 1)
    m.outb(CTL, 0x00)
    m.command(0x34, count=1, lba=lba, device=0x40, lba48=True)
    m.bus.pio_write_string(P, 2, b"\x5A" * 512)
    assert m.status() == 0x50 and backend.blocks[lba] == b"\x5A" * 512


def test_lba48_count_zero_means_65536():
    m = Machine(master=disk(sectors=70000))
    m.command(0x24, count=0, lba=0, device=0x40, lba48=True)
    assert m.status() == 0x58
    for i in range(3):
        assert m.insw(256) == pattern(i)


def test_multiple_mode_blocks():
    m = Machine(master=disk())
    m.command(0xC6, count=4)
    assert m.status() == 0x50
    assert m.identify()[59] == 0x0104
    m.command(0xC4, count=6, lba=20)
    assert m.status() == 0x58
    assert m.insw(1024) == b"".join(pattern(20 + i) for i in range(4))
    assert m.status() == 0x58                               # the second, shorter block
    assert m.insw(512) == pattern(24) + pattern(25)
    assert m.status() == 0x50
    m.command(0xC6, count=3)                                # not a power of two
    assert m.status() & 0x01
    m.command(0xC6, count=0)                                # disables multiple mode
    m.command(0xC4, count=1, lba=0)
    assert m.status() & 0x01 and m.inb(P + ERROR) == 0x04


def test_write_multiple_interrupts_per_block():
    backend = MemoryDisk(64)
    m = Machine(master=HardDisk(backend))
    m.outb(CTL, 0)
    m.command(0xC6, count=2)
    m.status()
    m.command(0xC5, count=4, lba=0)
    m.bus.pio_write_string(P, 2, b"\x01" * 1024)
    assert m.lines[-1] == (0, True) and m.status() == 0x58
    m.bus.pio_write_string(P, 2, b"\x02" * 1024)
    assert m.status() == 0x50
    assert [backend.blocks[i][0] for i in range(4)] == [1, 1, 2, 2]


def test_non_data_commands():
    backend = MemoryDisk(64)
    m = Machine(master=HardDisk(backend))
    for opcode in (0xE7, 0xEA):
        m.command(opcode)
        assert m.status() == 0x50
    assert backend.flushes == 2
    m.command(0xE5)
    assert m.status() == 0x50 and m.inb(P + COUNT) == 0xFF
    for opcode in (0x40, 0x42, 0x70, 0x10, 0xE0, 0xE1, 0xE3):
        m.command(opcode, count=1, lba=3, lba48=opcode == 0x42)
        assert m.status() == 0x50, hex(opcode)


def test_unknown_and_packet_commands_abort_on_a_disk():
    m = Machine(master=disk())
    for opcode in (0x00, 0xA0, 0xA1, 0x08, 0xB0, 0xFF):
        m.command(opcode)
        assert m.status() == 0x41 and m.inb(P + ERROR) == 0x04, hex(opcode)
        assert (m.inb(P + LBA_MID), m.inb(P + LBA_HIGH)) == (0, 0)


# -- reset and signatures ------------------------------------------------------------------------

def test_soft_reset_signatures():
    m = Machine(master=disk(), slave=CdromDrive())
    m.outb(P + LBA_MID, 0x77)
    m.outb(CTL, 0x04)
    assert m.status() & 0x80                                # BSY while SRST is held
    m.outb(CTL, 0x00)
    assert m.inb(P + DEVICE) == 0xA0
    regs = [m.inb(P + r) for r in (ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, STATUS)]
    assert regs == [0x01, 1, 1, 0, 0, 0x50]
    m.outb(P + DEVICE, 0xB0)
    regs = [m.inb(P + r) for r in (ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, STATUS)]
    assert regs == [0x01, 1, 1, 0x14, 0xEB, 0x00]           # packet device: DRDY stays clear
    assert m.lines == []


def test_execute_diagnostic_and_controller_reset():
    m = Machine(master=disk())
    m.command(0xC6, count=8)
    m.command(0x90)
    assert m.inb(P + ERROR) == 0x01 and m.status() == 0x50
    m.command(0x20, count=1, lba=0)
    m.bus.reset()
    assert m.status() == 0x50 and m.bus.pio_read(P, 2) == 0
    assert m.identify()[59] == 0x0110


# -- interrupt line ------------------------------------------------------------------------------

def test_nien_gates_the_line_and_status_read_clears_intrq():
    m = Machine(master=disk())
    m.outb(CTL, 0x02)                                     # nIEN: polled, as SeaBIOS does
    m.command(0x20, count=1, lba=0)
    assert m.lines == []
    m.outb(CTL, 0x00)
    assert m.lines == []                                   # not remembered while masked
    m.insw(256)
    m.command(0xE5)
    assert m.lines == [(0, True)]
    m.outb(CTL, 0x02)
    assert m.lines[-1] == (0, False)                       # masked: the line drops
    m.outb(CTL, 0x00)
    assert m.lines[-1] == (0, True)                        # still pending: back up
    m.bus.pio_read(CTL, 1)
    assert m.lines[-1] == (0, True)
    m.status()
    assert m.lines[-1] == (0, False)
    m.command(0xE5)
    m.command(0xE5)                                        # a command write clears the old one
    assert m.lines[-3:] == [(0, True), (0, False), (0, True)]


def test_secondary_channel_uses_its_own_ports_and_line():
    m = Machine(secondary_master=disk())
    m.bus.pio_write(0x176, 1, 0xE0)
    m.bus.pio_write(0x172, 1, 1)
    m.bus.pio_write(0x173, 1, 9)
    m.bus.pio_write(0x177, 1, 0x20)
    assert m.lines == [(1, True)]
    assert m.bus.pio_read_string(0x170, 2, 256) == pattern(9)
    assert m.bus.pio_read(0x376, 1) == 0x50
    assert m.status() == 0


# -- bus-master DMA ------------------------------------------------------------------------------

def write_prd(m, table, entries):
    for i, (addr, count) in enumerate(entries):
        eot = 0x8000 if i == len(entries) - 1 else 0
        m.memory.ram[table + 8 * i:table + 8 * i + 8] = struct.pack("<IHH", addr, count & 0xFFFF, eot)


def test_dma_read_scatters_into_guest_memory():
    m = Machine(master=disk())
    assert m.inb(BM + 2) == 0x20                            # drive 0 DMA capable
    write_prd(m, 0x1000, [(0x10000, 1024), (0x20000, 512)])
    m.bus.pio_write(BM + 4, 4, 0x1000)
    m.outb(BM, 0x08)                                        # device to memory
    m.outb(BM + 2, 0x06)
    m.command(0xC8, count=3, lba=40)
    assert m.status() == 0x58 and m.lines == []            # waits for the bus master
    m.outb(BM, 0x09)
    assert m.lines == [(0, True)]
    assert m.inb(BM + 2) & 0x07 == 0x04                     # interrupt, not active, no error
    assert bytes(m.memory.ram[0x10000:0x10400]) == pattern(40) + pattern(41)
    assert bytes(m.memory.ram[0x20000:0x20200]) == pattern(42)
    assert m.dma_writes == [(0x10000, 1024), (0x20000, 512)]
    m.outb(BM, 0x08)
    assert m.status() == 0x50
    m.outb(BM + 2, 0x44)                                    # write 1 to clear; bits 5/6 are plain R/W
    assert m.inb(BM + 2) == 0x40


def test_dma_write_gathers_from_guest_memory_when_started_first():
    backend = MemoryDisk(64)
    m = Machine(master=HardDisk(backend))
    m.memory.ram[0x30000:0x30200] = b"\xAB" * 512
    m.memory.ram[0x40000:0x40200] = b"\xCD" * 512
    write_prd(m, 0x2000, [(0x30000, 512), (0x40000, 512)])
    m.bus.pio_write(BM + 4, 4, 0x2000)
    m.outb(BM, 0x01)                                        # started before the command (Windows' order)
    m.command(0x35, count=2, lba=8, device=0x40, lba48=True)
    assert backend.blocks == {8: b"\xAB" * 512, 9: b"\xCD" * 512}
    assert m.inb(BM + 2) & 0x07 == 0x04 and m.status() == 0x50
    assert m.dma_writes == []


def test_dma_prd_larger_than_transfer_leaves_active_set():
    m = Machine(master=disk())
    write_prd(m, 0x1000, [(0x10000, 0)])                   # 0 means 64 KiB
    m.bus.pio_write(BM + 4, 4, 0x1000)
    m.command(0xC8, count=1, lba=1)
    m.outb(BM, 0x09)
    assert m.inb(BM + 2) & 0x07 == 0x05
    assert bytes(m.memory.ram[0x10000:0x10200]) == pattern(1)


def test_dma_prd_too_short_stops_without_interrupt():
    m = Machine(master=disk())
    write_prd(m, 0x1000, [(0x10000, 512)])
    m.bus.pio_write(BM + 4, 4, 0x1000)
    m.command(0xC8, count=2, lba=1)
    m.outb(BM, 0x09)
    assert m.inb(BM + 2) & 0x07 == 0x00 and m.lines == []


def test_dma_to_memory_that_is_not_ram_sets_the_error_bit():
    m = Machine(master=disk())
    write_prd(m, 0x1000, [(0xFFFFF000, 512)])
    m.bus.pio_write(BM + 4, 4, 0x1000)
    m.command(0xC8, count=1, lba=1)
    m.outb(BM, 0x09)
    assert m.inb(BM + 2) & 0x07 == 0x06
    assert m.status() & 0x01


def test_bus_master_registers_read_back():
    m = Machine(master=disk())
    m.bus.pio_write(BM + 8 + 4, 4, 0x12345677)
    assert m.bus.pio_read(BM + 8 + 4, 4) == 0x12345674
    m.bus.pio_write(BM + 8, 1, 0xFF)
    assert m.inb(BM + 8) == 0x09 and m.inb(BM + 8 + 2) & 0x01
    assert m.bus.pio_read(BM, 4) >> 16 & 0x60 == 0x20


# -- state ---------------------------------------------------------------------------------------

def test_snapshot_and_restore_mid_transfer():
    backend = MemoryDisk(64, fill=pattern)
    m = Machine(master=HardDisk(backend))
    m.command(0x20, count=2, lba=3)
    first_half = m.insw(100)
    state = m.ide.snapshot()
    bus_state = m.bus.snapshot()
    assert set(bus_state) == {"ide0", "ide0-ctl", "ide1", "ide1-ctl", "ide-bm"}

    other = Machine(master=HardDisk(backend))
    other.bus.restore(bus_state)
    assert first_half + other.insw(156) == pattern(3)
    assert other.status() == 0x58
    assert other.insw(256) == pattern(4) and other.status() == 0x50

    m.ide.restore(state)                                    # the controller-level form works too
    assert m.insw(156) == pattern(3)[200:]


def test_restore_refuses_a_different_drive():
    m = Machine(master=disk())
    state = m.ide.snapshot()
    with pytest.raises(ValueError, match="cdrom"):
        Machine(master=CdromDrive()).ide.restore(state)


def test_snapshot_is_plain_data():
    import pickle
    m = Machine(master=disk(), slave=CdromDrive())
    m.command(0x30, count=1, lba=0)
    state = m.ide.snapshot()
    assert pickle.loads(pickle.dumps(state)) == state

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (bool, int, str, bytes))
    assert plain(state)


# -- PCI function and helpers --------------------------------------------------------------------

def test_pci_function_ids_and_bar4_tracking():
    changes = []
    function = PiixIdeFunction("piix3", on_bar_change=lambda *args: changes.append(args))
    root = PciRoot()
    root.add(function, 1, 1)
    config = PciConfigIo(root)

    def cfg_write(reg, size, value):
        config.write(0, 4, 0x80000000 | 1 << 11 | 1 << 8 | (reg & 0xFC))
        config.write(4 + (reg & 3), size, value)

    def cfg_read(reg, size):
        config.write(0, 4, 0x80000000 | 1 << 11 | 1 << 8 | (reg & 0xFC))
        return config.read(4 + (reg & 3), size)

    assert cfg_read(0, 4) == 0x70108086
    assert cfg_read(8, 4) >> 8 == 0x010180
    cfg_write(0x20, 4, 0xFFFFFFFF)
    assert cfg_read(0x20, 4) == 0xFFFFFFF1                 # 16 bytes of I/O
    assert changes == []
    cfg_write(0x20, 4, 0xC000)
    assert changes == []                                    # I/O decoding still off
    cfg_write(COMMAND, 2, 0x0005)
    assert changes == [(4, None, 0xC000)]
    cfg_write(0x20, 4, 0xD000)
    assert changes[-1] == (4, 0xC000, 0xD000)
    cfg_write(0x40, 2, 0x8000)
    cfg_write(0x42, 2, 0x8000)
    assert cfg_read(0x40, 4) == 0x80008000
    cfg_write(COMMAND, 2, 0)
    assert changes[-1] == (4, 0xD000, None)
    state = function.snapshot()
    function.reset()
    function.restore(state)
    assert function.bus_master_base is None
    assert PiixIdeFunction("piix4").config_read(0, 4) == 0x71118086


def test_boot_paths_and_cmos_bytes():
    assert boot_path(1, 0) == "/pci@i0cf8/ide@1,1/drive@1/disk@0"
    assert boot_path(0, 1) == "/pci@i0cf8/ide@1,1/drive@0/disk@1"
    values = cmos_disk_bytes(disk(sectors=1 << 21))
    assert values[0x12] == 0xF0 and values[0x19] == 47
    assert values[0x1B] | values[0x1C] << 8 == 2080 and values[0x1D] == 16 and values[0x23] == 63
    assert values[0x39] == 1


def test_hard_disk_needs_512_byte_sectors():
    with pytest.raises(ValueError, match="512-byte"):
        HardDisk(MemoryDisk(8, sector_size=2048))
