"""ATAPI CD/DVD drives on the IDE controller: the PACKET protocol (interrupt reasons, byte counts),
PIO and DMA data phases, the MMC commands guests and SeaBIOS send, sense data and medium changes."""

import struct

import pytest

from services.hw.storage.atapi import CdromDrive, ata_string, lba_to_msf
from services.hw.storage.ide.controller import IdeController

P, CTL, BM = 0x170, 0x376, 0xC000     # the drive sits on the secondary channel, as VirtualBox puts it
DATA, ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS = range(8)
COD, IO = 1, 2


class IsoImage:
    """An in-memory CD image: sector n starts with its number."""

    def __init__(self, sectors: int):
        self.path = "memory.iso"
        self.size = sectors * 2048
        self.sector_size = 2048
        self.readonly = True

    def read(self, offset, length):
        assert offset % 2048 == 0 and length % 2048 == 0 and offset + length <= self.size
        return b"".join(iso_sector(i) for i in range(offset // 2048, (offset + length) // 2048))

    def write(self, offset, data):
        raise AssertionError("a CD is read-only")

    def flush(self):
        pass

    def close(self):
        pass


def iso_sector(index: int) -> bytes:
    return struct.pack(">I", index) + bytes((index * 7 + i) & 0xFF for i in range(2044))


class FakeMemory:
    def __init__(self, size=1 << 20):
        self.ram = bytearray(size)

    def read(self, gpa, size):
        return bytes(self.ram[gpa:gpa + size])

    def write(self, gpa, data):
        self.ram[gpa:gpa + len(data)] = data


class Rig:
    """The secondary channel with a CD drive as master, driven through the controller's devices."""

    def __init__(self, medium=None, slave=False):
        self.lines = []
        self.dma_writes = []
        self.memory = FakeMemory()
        self.ide = IdeController(lambda ch, level: self.lines.append(level), memory=self.memory,
                                 on_dma_write=lambda gpa, n: self.dma_writes.append((gpa, n)))
        self.cd = CdromDrive(medium, model="HEADBOX CD-ROM")
        self.ide.attach(1, 1 if slave else 0, self.cd)
        self.channel = self.ide.channels[1]
        self.unit = 0xB0 if slave else 0xA0

    def inb(self, port):
        if port == CTL:
            return self.channel.control.read(0, 1)
        if port >= BM:
            return self.ide.bus_master.read(port - BM + 8, 1)
        return self.channel.read(port - P, 1)

    def outb(self, port, value):
        if port == CTL:
            self.channel.control.write(0, 1, value)
        elif port >= BM:
            self.ide.bus_master.write(port - BM + 8, 1, value)
        else:
            self.channel.write(port - P, 1, value)

    def status(self):
        return self.inb(P + STATUS)

    def reason(self):
        return self.inb(P + COUNT) & 3

    def byte_count(self):
        return self.inb(P + LBA_MID) | self.inb(P + LBA_HIGH) << 8

    def packet(self, cdb: bytes, limit=0xFFFE, dma=False):
        """PACKET, then the 12-byte CDB: SeaBIOS's send_atapi_cmd."""
        self.outb(P + DEVICE, self.unit)
        self.outb(P + ERROR, 1 if dma else 0)
        self.outb(P + LBA_MID, limit & 0xFF)
        self.outb(P + LBA_HIGH, limit >> 8)
        self.outb(P + STATUS, 0xA0)
        assert self.status() & 0x89 == 0x08 and self.reason() == COD      # DRQ, command packet wanted
        assert self.lines == [] or self.lines[-1] is False                  # and no interrupt for it
        self.channel.write_string(0, 2, cdb.ljust(12, b"\0"))

    def data_in(self):
        """Read every DRQ block of a PIO data-in phase; returns the block sizes and the data."""
        sizes, data = [], b""
        while self.inb(CTL) & 0x08:
            assert self.lines[-1] is True           # an interrupt for every block
            assert self.status() & 0x89 == 0x08 and self.reason() == IO
            size = self.byte_count()
            sizes.append(size)
            data += self.channel.read_string(0, 2, (size + 1) // 2)[:size]
        return sizes, data

    def command(self, cdb: bytes, limit=0xFFFE) -> bytes:
        self.packet(cdb, limit)
        _, data = self.data_in()
        assert self.reason() == IO | COD
        return data

    def sense(self):
        data = self.command(bytes((0x03, 0, 0, 0, 18)))
        return data[2] & 0x0F, data[12], data[13]


def read10(lba, count):
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, count, 0)


def test_identify_packet_device():
    rig = Rig(IsoImage(100))
    rig.outb(P + DEVICE, 0xA0)
    rig.outb(P + STATUS, 0xA1)
    assert rig.status() == 0x58 and rig.lines == [True, False]
    words = struct.unpack("<256H", rig.channel.read_string(0, 2, 256))
    assert words[0] == 0x85C0
    assert (words[0] >> 8) & 0x1F == 0x05
    assert words[49] & 0x0300 == 0x0300
    assert struct.pack("<20H", *words[27:47]) == ata_string("HEADBOX CD-ROM", 40)
    assert rig.status() == 0x50


def test_identify_device_is_aborted_with_the_packet_signature():
    rig = Rig(IsoImage(100))
    rig.outb(P + DEVICE, 0xA0)
    rig.outb(P + STATUS, 0xEC)
    assert rig.status() & 0x01 and rig.inb(P + ERROR) == 0x04
    assert [rig.inb(P + r) for r in (COUNT, LBA_LOW, LBA_MID, LBA_HIGH)] == [1, 1, 0x14, 0xEB]


def test_test_unit_ready_has_only_a_status_phase():
    rig = Rig(IsoImage(100))
    rig.packet(b"\x00")
    assert rig.lines[-1] is True
    assert rig.status() == 0x50 and rig.reason() == IO | COD and rig.lines[-1] is False


def test_inquiry_and_allocation_length():
    rig = Rig(IsoImage(100))
    data = rig.command(bytes((0x12, 0, 0, 0, 36)))
    assert len(data) == 36 and data[0] == 0x05 and data[1] == 0x80 and data[4] == 31
    assert data[8:16] == b"HEADBOX " and data[16:32] == b"HEADBOX CD-ROM  "
    assert rig.command(bytes((0x12, 0, 0, 0, 5))) == data[:5]


def test_read10_pio_one_block_per_sector_with_a_2048_byte_limit():
    rig = Rig(IsoImage(100))
    rig.packet(read10(16, 3), limit=2048)
    sizes, data = rig.data_in()
    assert sizes == [2048, 2048, 2048]
    assert data == iso_sector(16) + iso_sector(17) + iso_sector(18)
    assert rig.status() == 0x50 and rig.reason() == IO | COD


def test_read10_byte_count_limit_not_a_sector_multiple():
    rig = Rig(IsoImage(100))
    rig.packet(read10(5, 2), limit=3001)                   # odd limits are rounded down to even
    sizes, data = rig.data_in()
    assert sizes == [3000, 1096]
    assert data == iso_sector(5) + iso_sector(6)


def test_read10_large_limit_sends_several_sectors_per_block():
    rig = Rig(IsoImage(100))
    rig.packet(read10(0, 40))
    sizes, data = rig.data_in()
    assert sizes == [0xFFFE, 40 * 2048 - 0xFFFE]
    assert data == b"".join(iso_sector(i) for i in range(40))


def test_read12_and_read_capacity():
    rig = Rig(IsoImage(100))
    data = rig.command(struct.pack(">BBIIBB", 0xA8, 0, 99, 1, 0, 0))
    assert data == iso_sector(99)
    assert rig.command(b"\x25") == struct.pack(">II", 99, 2048)


def test_request_sense_after_errors():
    rig = Rig(IsoImage(100))
    rig.packet(b"\xFF")                                    # no such opcode
    assert rig.status() == 0x41 and rig.inb(P + ERROR) == 0x50 and rig.reason() == IO | COD
    assert rig.sense() == (0x5, 0x20, 0x00)
    assert rig.sense() == (0x0, 0x00, 0x00)                 # reported once
    rig.packet(read10(100, 1))
    assert rig.status() & 0x01
    assert rig.sense() == (0x5, 0x21, 0x00)


def test_empty_drive_reports_no_medium():
    rig = Rig(None)
    rig.packet(b"\x00")
    assert rig.status() & 0x01 and rig.inb(P + ERROR) >> 4 == 0x2
    assert rig.sense() == (0x2, 0x3A, 0x00)
    assert rig.command(bytes((0x12, 0, 0, 0, 36)))[0] == 0x05      # INQUIRY works without a disc


def test_seabios_is_ready_loop_after_a_disc_change():
    rig = Rig(None)
    rig.cd.insert(IsoImage(50))
    rig.packet(b"\x00")
    assert rig.status() & 0x01 and rig.inb(P + ERROR) == 0x60
    assert rig.sense() == (0x6, 0x28, 0x00)
    rig.packet(b"\x00")
    assert rig.status() == 0x50
    assert rig.command(read10(49, 1)) == iso_sector(49)


def test_event_status_notification_reports_media_changes():
    rig = Rig(IsoImage(10))
    gesn = bytes((0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8))
    assert rig.command(gesn) == bytes((0, 4, 4, 0x10, 0, 2, 0, 0))   # length: the descriptor only
    rig.cd.eject()
    assert rig.command(gesn)[4:6] == bytes((3, 0))          # media removal, no medium
    rig.cd.insert(IsoImage(10))
    assert rig.command(gesn)[4:6] == bytes((2, 2))          # new media, present
    assert rig.command(gesn)[4:6] == bytes((0, 2))
    rig.packet(bytes((0x4A, 0, 0, 0, 0x10, 0, 0, 0, 8)))   # asynchronous: not supported
    assert rig.status() & 0x01


def test_read_toc_lba_and_msf():
    rig = Rig(IsoImage(1000))
    toc = rig.command(bytes((0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0)))
    assert toc == (struct.pack(">HBB", 18, 1, 1) + bytes((0, 0x14, 1, 0)) + struct.pack(">I", 0)
                   + bytes((0, 0x14, 0xAA, 0)) + struct.pack(">I", 1000))
    toc = rig.command(bytes((0x43, 2, 0, 0, 0, 0, 0, 0, 100, 0)))
    assert toc[8:12] == bytes((0, 0, 2, 0)) and toc[16:20] == lba_to_msf(1000)
    assert lba_to_msf(1000) == bytes((0, 0, 15, 25))
    assert rig.command(bytes((0x43, 0, 0, 0, 0, 0, 0xAA, 0, 100, 0)))[2:4] == b"\x01\x01"
    assert len(rig.command(bytes((0x43, 0, 0, 0, 0, 0, 0xAA, 0, 100, 0)))) == 12
    session = rig.command(bytes((0x43, 0, 1, 0, 0, 0, 0, 0, 12, 0)))
    assert session == struct.pack(">HBB", 10, 1, 1) + bytes((0, 0x14, 1, 0, 0, 0, 0, 0))
    assert rig.command(bytes((0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0x40)))[:4] == session[:4]   # byte 9 form
    assert len(rig.command(bytes((0x43, 0, 0, 0, 0, 0, 0, 0, 4, 0)))) == 4
    rig.packet(bytes((0x43, 0, 5, 0, 0, 0, 0, 0, 100, 0)))
    assert rig.status() & 0x01 and rig.sense() == (0x5, 0x24, 0)


def test_mode_sense_capabilities_page():
    rig = Rig(IsoImage(10))
    data = rig.command(bytes((0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 64, 0)))
    assert struct.unpack(">H", data[:2])[0] == len(data) - 2 == 28
    page = data[8:]
    assert page[0] == 0x2A and page[1] == 20 and page[6] & 0x08
    rig.command(bytes((0x1E, 0, 0, 0, 1)))                 # PREVENT MEDIUM REMOVAL
    assert rig.command(bytes((0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 64, 0)))[14] & 0x02
    data6 = rig.command(bytes((0x1A, 0, 0x3F, 0, 255)))
    assert data6[0] == len(data6) - 1 and 0x2A in (data6[4], data6[12], data6[28])
    rig.packet(bytes((0x5A, 0, 0xEA, 0, 0, 0, 0, 0, 64, 0)))    # saved values
    assert rig.sense() == (0x5, 0x39, 0)


def test_get_configuration_and_disc_information():
    rig = Rig(IsoImage(10))
    config = rig.command(bytes((0x46, 0, 0, 0, 0, 0, 0, 0x01, 0, 0)))
    assert struct.unpack(">I", config[:4])[0] == len(config) - 4
    assert struct.unpack(">H", config[6:8])[0] == 0x0008           # CD-ROM current
    assert config[8:10] == b"\x00\x00" and config[10] & 3 == 3
    one = rig.command(bytes((0x46, 2, 0, 0x1E, 0, 0, 0, 0x01, 0, 0)))
    assert one[8:10] == b"\x00\x1E" and len(one) == 16
    info = rig.command(bytes((0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0)))
    assert len(info) == 34 and info[2] == 0x0E
    empty = Rig(None)
    assert struct.unpack(">H", empty.command(bytes((0x46, 0, 0, 0, 0, 0, 0, 0, 8, 0)))[6:8])[0] == 0


def test_start_stop_unit_respects_the_lock():
    rig = Rig(IsoImage(10))
    rig.command(bytes((0x1E, 0, 0, 0, 1)))
    rig.packet(bytes((0x1B, 0, 0, 0, 0x02)))                # eject
    assert rig.sense() == (0x2, 0x53, 0x02)
    rig.command(bytes((0x1E, 0, 0, 0, 0)))
    rig.command(bytes((0x1B, 0, 0, 0, 0x02)))
    assert rig.cd.tray_open
    assert rig.command(bytes((0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8)))[1] & 0x10
    rig.packet(b"\x00")
    assert rig.sense() == (0x2, 0x3A, 0)
    rig.command(bytes((0x1B, 0, 0, 0, 0x03)))               # load
    assert rig.command(b"\x00") == b""


def test_mode_select_data_out_phase():
    received = []
    rig = Rig(IsoImage(10))
    rig.cd.receive = lambda cdb, data: received.append(data)
    params = bytes(8) + bytes((0x2A, 2, 0, 0))
    rig.packet(bytes((0x55, 0x10, 0, 0, 0, 0, 0, 0, len(params), 0)), limit=8)
    assert rig.status() & 0x08 and rig.reason() == 0 and rig.byte_count() == 8
    rig.channel.write_string(0, 2, params[:8])
    assert rig.status() & 0x08 and rig.byte_count() == 4
    rig.channel.write_string(0, 2, params[8:])
    assert rig.status() == 0x50 and rig.reason() == IO | COD
    assert received == [params]


def test_read_cd_user_data_and_raw():
    rig = Rig(IsoImage(10))
    user = rig.command(bytes((0xBE, 0, 0, 0, 0, 3, 0, 0, 1, 0x10, 0, 0)))
    assert user == iso_sector(3)
    raw = rig.command(bytes((0xBE, 0, 0, 0, 0, 3, 0, 0, 1, 0xF8, 0, 0)))
    assert len(raw) == 2352 and raw[:12] == b"\x00" + b"\xff" * 10 + b"\x00"
    assert raw[12:16] == bytes((0, 2, 3, 1)) and raw[16:2064] == iso_sector(3)
    assert rig.command(bytes((0xBB, 0, 0xFF, 0xFF))) == b""                # SET CD SPEED


def test_device_reset_and_soft_reset_signature():
    rig = Rig(IsoImage(10), slave=True)
    rig.packet(read10(0, 1))
    rig.outb(P + STATUS, 0x08)                              # DEVICE RESET mid-transfer
    assert rig.status() == 0x00
    assert [rig.inb(P + r) for r in (ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH)] == [1, 1, 1, 0x14, 0xEB]
    rig.outb(CTL, 0x04)
    rig.outb(CTL, 0x00)
    rig.outb(P + DEVICE, 0xB0)
    assert (rig.inb(P + LBA_MID), rig.inb(P + LBA_HIGH), rig.status()) == (0x14, 0xEB, 0)


def write_prd(rig, table, entries):
    for i, (addr, count) in enumerate(entries):
        eot = 0x8000 if i == len(entries) - 1 else 0
        rig.memory.ram[table + 8 * i:table + 8 * i + 8] = struct.pack("<IHH", addr, count, eot)


def test_read10_by_dma():
    rig = Rig(IsoImage(100))
    write_prd(rig, 0x1000, [(0x10000, 4096), (0x30000, 2048)])
    rig.outb(BM + 4, 0x00)
    rig.outb(BM + 5, 0x10)
    rig.outb(BM, 0x08)
    rig.packet(read10(20, 3), dma=True)
    assert rig.status() & 0x08 and rig.lines == []          # waits for the bus master
    rig.outb(BM, 0x09)
    assert rig.lines == [True]
    assert rig.inb(BM + 2) & 0x07 == 0x04
    assert bytes(rig.memory.ram[0x10000:0x11000]) == iso_sector(20) + iso_sector(21)
    assert bytes(rig.memory.ram[0x30000:0x30800]) == iso_sector(22)
    assert rig.dma_writes == [(0x10000, 4096), (0x30000, 2048)]
    assert rig.status() == 0x50 and rig.reason() == IO | COD


def test_inquiry_by_dma_and_dma_error_sense():
    rig = Rig(IsoImage(100))
    write_prd(rig, 0x1000, [(0x10000, 36)])
    rig.outb(BM + 5, 0x10)
    rig.outb(BM, 0x09)                                       # started first
    rig.packet(bytes((0x12, 0, 0, 0, 36)), dma=True)
    assert rig.memory.ram[0x10000] == 0x05 and rig.inb(BM + 2) & 0x07 == 0x04
    rig.outb(BM, 0x08)
    rig.packet(read10(200, 1), dma=True)                    # out of range: no data phase at all
    assert rig.status() & 0x01 and rig.sense() == (0x5, 0x21, 0)


def test_snapshot_restore_mid_packet_transfer():
    image = IsoImage(100)
    rig = Rig(image)
    rig.packet(read10(30, 2), limit=2048)
    first = rig.channel.read_string(0, 2, 300)
    state = rig.ide.snapshot()

    other = Rig(image)
    other.ide.restore(state)
    rest = other.channel.read_string(0, 2, 724)
    assert first + rest == iso_sector(30)
    other.lines.append(True)                    # the line was high when saved; no new edge
    sizes, data = other.data_in()
    assert sizes == [2048] and data == iso_sector(31)
    assert other.status() == 0x50


def test_cdrom_state_survives_restore_and_flags_a_changed_disc():
    rig = Rig(IsoImage(10))
    rig.command(bytes((0x1E, 0, 0, 0, 1)))
    state = rig.ide.snapshot()
    same = Rig(IsoImage(10))
    same.ide.restore(state)
    assert same.cd.locked and same.command(b"\x00") == b""
    empty = Rig(None)
    empty.ide.restore(state)
    empty.packet(b"\x00")
    assert empty.sense() == (0x6, 0x28, 0)


@pytest.mark.parametrize("opcode", [0xE5, 0xEF])
def test_ata_commands_a_packet_device_accepts(opcode):
    rig = Rig(IsoImage(10))
    rig.outb(P + DEVICE, 0xA0)
    rig.outb(P + ERROR, 0x03 if opcode == 0xEF else 0)
    rig.outb(P + COUNT, 0x22)                                # MWDMA 2
    rig.outb(P + STATUS, opcode)
    assert rig.status() == 0x50
