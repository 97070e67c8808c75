"""The ATA hard disk itself: a BlockBackend with 512-byte sectors, the geometry and IDENTIFY DEVICE
page it reports, and the CMOS bytes for guests that read the disk table from NVRAM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.hw.storage.atapi import ata_string, identify_page

if TYPE_CHECKING:
    from services.hw.storage.ide.unit import Unit

SECTOR = 512
MAX_MULTIPLE = 16                   # the most sectors one READ/WRITE MULTIPLE block carries
DEFAULT_HEADS, DEFAULT_SPT = 16, 63


def default_geometry(sectors: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) that IDENTIFY reports: the standard 16/63
    translation, capped at the 16383 cylinders of ATA's CHS limit."""
    cylinders = min(max(sectors // (DEFAULT_HEADS * DEFAULT_SPT), 1), 16383)
    return cylinders, DEFAULT_HEADS, DEFAULT_SPT


class HardDisk:
    """An ATA hard disk over a BlockBackend with 512-byte sectors. Configuration only: the state a
    guest changes (multiple count, translation, transfer mode) lives in the channel."""

    kind = "disk"

    def __init__(self, backend, *, model: str = "HEADBOX HARDDISK", serial: str = "HBHD0001",
                 firmware: str = "1.0"):
        if backend.sector_size != SECTOR:
            raise ValueError(f"{backend.path}: a hard disk needs 512-byte sectors, "
                             f"not {backend.sector_size}")
        self.backend = backend
        self.model, self.serial, self.firmware = model, serial, firmware
        self.sectors = backend.size // SECTOR
        self.cylinders, self.heads, self.sectors_per_track = default_geometry(self.sectors)

    def identify(self, unit: Unit, reset_result: int) -> bytes:
        total = self.sectors
        cur_cylinders = min(total // (unit.heads * unit.spt), 65535)
        cur_capacity = cur_cylinders * unit.heads * unit.spt
        write_cache = 0x20 if unit.write_cache else 0
        words = {
            0: 0x0040,                               # fixed disk
            1: self.cylinders, 3: self.heads, 6: self.sectors_per_track,
            20: 3, 21: 512, 22: 4,                   # obsolete buffer fields old drivers print
            47: 0x8000 | MAX_MULTIPLE,
            49: 0x0B00,                              # IORDY, LBA, DMA
            50: 0x4000,
            51: 0x0200, 52: 0x0200,
            53: 0x0007,                              # words 54-58, 64-70 and 88 are valid
            54: cur_cylinders, 55: unit.heads, 56: unit.spt,
            57: cur_capacity & 0xFFFF, 58: cur_capacity >> 16,
            59: 0x0100 | unit.multiple if unit.multiple else 0,
            60: min(total, 0x0FFFFFFF) & 0xFFFF, 61: min(total, 0x0FFFFFFF) >> 16,
            63: 0x0007 | (0x100 << unit.mwdma if unit.mwdma is not None else 0),
            64: 0x0003,                              # PIO modes 3 and 4
            65: 120, 66: 120, 67: 120, 68: 120,
            80: 0x00F0,                              # ATA/ATAPI-4 to -7
            82: 0x4000 | 0x20, 83: 0x7400, 84: 0x4000,   # write cache; FLUSH CACHE (EXT), LBA48
            85: 0x4000 | write_cache, 86: 0x3400, 87: 0x4000,
            88: 0x003F | (0x100 << unit.udma if unit.udma is not None else 0),
            93: reset_result,
            100: total & 0xFFFF, 101: (total >> 16) & 0xFFFF,
            102: (total >> 32) & 0xFFFF, 103: (total >> 48) & 0xFFFF,
        }
        strings = {10: ata_string(self.serial, 20), 23: ata_string(self.firmware, 8),
                   27: ata_string(self.model, 40)}
        return identify_page(words, strings)


def cmos_disk_bytes(first: HardDisk | None, second: HardDisk | None = None) -> dict[int, int]:
    """NVRAM bytes for the first two hard disks (user type 47, geometry, LBA translation), for
    guests that read the disk table from CMOS rather than asking the BIOS."""
    values = {0x12: (0xF0 if first else 0) | (0x0F if second else 0), 0x19: 0, 0x1A: 0, 0x39: 0}
    for index, disk in enumerate((first, second)):
        if disk is None:
            continue
        base = 0x1B + 9 * index
        cylinders, heads, spt = disk.cylinders, disk.heads, disk.sectors_per_track
        values[0x19 + index] = 47
        values.update({base: cylinders & 0xFF, base + 1: cylinders >> 8, base + 2: heads,
                       base + 3: 0xFF, base + 4: 0xFF,                     # no write precompensation
                       base + 5: 0xC0 | (0x08 if heads > 8 else 0),
                       base + 6: cylinders & 0xFF, base + 7: cylinders >> 8, base + 8: spt})
        if cylinders > 1024:
            values[0x39] |= 1 << (2 * index)                                # LBA translation
    return values
