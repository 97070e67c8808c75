"""The PIIX3/PIIX4 IDE controller: two ATA channels with hard disks and ATAPI CD/DVD drives, PIO and
bus-master DMA, and the PCI function (00:01.1) whose BAR4 places the bus-master registers."""

from __future__ import annotations

import struct
from typing import Callable

from services.hw.chipset.pci import BAR_IO, COMMAND_IO, STATUS, PciFunction
from services.hw.storage.atapi import (
    MEDIUM_ERROR,
    PACKET_SIZE,
    CdromDrive,
    CheckCondition,
    DataOut,
    SectorRead,
    ata_string,
    identify_page,
)
from services.images.backend import ImageError

__all__ = ["HardDisk", "CdromDrive", "IdeController", "IdeChannel", "BusMasterPorts", "PiixIdeFunction",
           "boot_path", "cmos_disk_bytes", "CHANNELS", "IDE_SLOT", "IDE_FUNCTION"]

SECTOR = 512
CHANNELS = ((0x1F0, 0x3F6, 14), (0x170, 0x376, 15))    # command block, control port, ISA IRQ

# Status, error and device control bits
ST_ERR, ST_DRQ, ST_DSC, ST_DF, ST_DRDY, ST_BSY = 0x01, 0x08, 0x10, 0x20, 0x40, 0x80
ER_ABRT, ER_IDNF, ER_UNC = 0x04, 0x10, 0x40
DC_NIEN, DC_SRST, DC_HOB = 0x02, 0x04, 0x80
DEV_BIT, LBA_BIT = 0x10, 0x40
# ATAPI interrupt reason (sector count register)
IR_COD, IR_IO = 0x01, 0x02

# Bus-master registers (per channel, 8 bytes)
BM_START, BM_TO_MEMORY = 0x01, 0x08
BM_ACTIVE, BM_ERROR, BM_INTERRUPT, BM_DRIVE0_DMA, BM_DRIVE1_DMA = 0x01, 0x02, 0x04, 0x20, 0x40
BM_CHANNEL_SIZE, BM_SIZE = 8, 16
PRD_EOT = 0x8000
PRD_LIMIT = 8192                    # a PRD table lives in one 64 KiB page
DMA_CHUNK = 128 * SECTOR            # bytes read from an image per step of a DMA transfer

MAX_MULTIPLE = 16
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

    def identify(self, unit: _Unit, reset_result: int) -> bytes:
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


# PIO phases a unit can be in (what happens when the current DRQ block is done)
OP_NONE, OP_DATA_IN, OP_READ, OP_WRITE, OP_CDB, OP_ATAPI_IN, OP_ATAPI_OUT = (
    "", "data-in", "read", "write", "cdb", "atapi-in", "atapi-out")
# DMA commands a unit can have waiting for the bus master
DMA_NONE, DMA_READ, DMA_WRITE, DMA_ATAPI_IN, DMA_ATAPI_OUT = "", "read", "write", "atapi-in", "atapi-out"

_TASK_FILE = ("error", "feature", "nsector", "sector", "lcyl", "hcyl", "hob_feature", "hob_nsector",
              "hob_sector", "hob_lcyl", "hob_hcyl", "select", "status")
_SETTINGS = ("multiple", "heads", "spt", "mwdma", "udma", "write_cache")
_TRANSFER = ("pos", "end", "op", "reading", "lba", "remaining", "block", "addressing", "first_lba",
             "byte_limit", "cdb", "atapi_dma", "reply", "read_lba", "read_count", "read_size",
             "out_length", "out_data", "dma")


class _Unit:
    """One drive position (master or slave) of a channel: its task-file registers, the settings
    the guest made, and the transfer in progress. Present even when no drive is attached."""

    __slots__ = ("drive",) + _TASK_FILE + _SETTINGS + _TRANSFER + ("buf",)

    def __init__(self):
        self.drive = None
        for name in _TASK_FILE:
            setattr(self, name, 0)
        self.select = 0xA0
        self.power_on()
        self.clear_transfer()

    def power_on(self) -> None:
        drive = self.drive
        self.multiple = MAX_MULTIPLE
        if drive is not None and drive.kind == "disk":
            self.heads, self.spt = drive.heads, drive.sectors_per_track
        else:
            self.heads, self.spt = DEFAULT_HEADS, DEFAULT_SPT
        self.mwdma, self.udma = 2, None
        self.write_cache = True

    def clear_transfer(self) -> None:
        self.buf = b""
        self.pos = self.end = 0
        self.op = OP_NONE
        self.reading = False
        self.lba = self.remaining = self.first_lba = 0
        self.block = 1
        self.addressing = "lba28"
        self.byte_limit = 0
        self.cdb = b""
        self.atapi_dma = False
        self.reply = b""
        self.read_lba = self.read_count = 0
        self.read_size = 2048
        self.out_length = 0
        self.out_data = b""
        self.dma = DMA_NONE

    def set_signature(self) -> None:
        """The registers a device leaves after a reset or diagnostic: packet devices 14h/EBh."""
        self.nsector = self.sector = 1
        cdrom = self.drive is not None and self.drive.kind == "cdrom"
        self.lcyl, self.hcyl = (0x14, 0xEB) if cdrom else (0, 0)
        self.select &= 0xF0

    def snapshot(self) -> dict:
        state = {name: getattr(self, name) for name in _TASK_FILE + _SETTINGS + _TRANSFER}
        state["buf"] = bytes(self.buf)
        state["kind"] = self.drive.kind if self.drive is not None else None
        if self.drive is not None and self.drive.kind == "cdrom":
            state["cdrom"] = self.drive.snapshot()
        return state

    def restore(self, state: dict) -> None:
        kind = self.drive.kind if self.drive is not None else None
        if state["kind"] != kind:
            raise ValueError(f"the saved IDE state has a {state['kind'] or 'empty'} drive where this VM "
                             f"has a {kind or 'empty'} one")
        for name in _TASK_FILE + _SETTINGS + _TRANSFER:
            setattr(self, name, state[name])
        for name in ("cdb", "reply", "out_data"):
            setattr(self, name, bytes(state[name]))
        self.buf = bytes(state["buf"]) if self.reading else bytearray(state["buf"])
        if kind == "cdrom":
            self.drive.restore(state["cdrom"])


class _PrdWalk:
    """A cursor over a physical region descriptor table in guest memory."""

    def __init__(self, memory, table: int, on_write: Callable[[int, int], None] | None):
        self.memory, self.table, self.on_write = memory, table & ~3, on_write
        self.addr = self.left = self.entries = 0
        self.eot = False

    def _advance(self) -> bool:
        if self.eot or self.entries >= PRD_LIMIT:
            return False
        addr, count, flags = struct.unpack("<IHH", self.memory.read(self.table, 8))
        self.table += 8
        self.entries += 1
        self.addr, self.left = addr & ~1, (count & ~1) or 0x10000
        self.eot = bool(flags & PRD_EOT)
        return True

    @property
    def exhausted(self) -> bool:
        """The table was used up to the end of its last entry, as a correct transfer leaves it."""
        return self.eot and not self.left

    def scatter(self, data) -> int:
        """Copy `data` into guest memory; the number of bytes the table had room for."""
        view, done = memoryview(data), 0
        while done < len(view):
            if not self.left and not self._advance():
                break
            n = min(self.left, len(view) - done)
            self.memory.write(self.addr, bytes(view[done:done + n]))
            if self.on_write is not None:
                self.on_write(self.addr, n)
            self.addr += n
            self.left -= n
            done += n
        return done

    def gather(self, length: int) -> bytes:
        parts, done = [], 0
        while done < length:
            if not self.left and not self._advance():
                break
            n = min(self.left, length - done)
            parts.append(self.memory.read(self.addr, n))
            self.addr += n
            self.left -= n
            done += n
        return b"".join(parts)


class IdeChannel:
    """One ATA channel as a device on its command block (offsets 0-7): data, error/features, sector
    count, LBA low/mid/high, device, status/command. `control` is the device for its control port
    (alternate status / device control). Holds the channel's bus-master registers too."""

    def __init__(self, index: int, host: IdeController):
        self.index = index
        self.name = f"ide{index}"
        self.host = host
        self.units = [_Unit(), _Unit()]
        self.control = _ControlPort(self)
        self.current = 0
        self.devctl = 0
        self.intrq = False
        self.line = False
        self.bm_command = 0
        self.bm_status = 0
        self.bm_prd = 0
        self.dma_unit = -1
        self.reset()

    # -- configuration -----------------------------------------------------------------------------
    def attach(self, unit: int, drive) -> None:
        u = self.units[unit]
        u.drive = drive
        u.power_on()
        u.clear_transfer()
        self._power_on_unit(u)
        self._update_dma_capable()

    def reset(self) -> None:
        for unit in self.units:
            unit.power_on()
            unit.clear_transfer()
            for name in _TASK_FILE:
                setattr(unit, name, 0)
            unit.select = 0xA0
            self._power_on_unit(unit)
            if unit.drive is not None and unit.drive.kind == "cdrom":
                unit.drive.reset()
        self.current = 0
        self.devctl = 0
        self.intrq = False
        self.bm_command = self.bm_status = self.bm_prd = 0
        self.dma_unit = -1
        self._update_dma_capable()
        self._update_line()

    def _power_on_unit(self, unit: _Unit) -> None:
        unit.set_signature()
        unit.error = 0x01                   # diagnostic passed
        kind = unit.drive.kind if unit.drive is not None else None
        # Packet devices leave DRDY clear after a reset until the host speaks to them.
        unit.status = ST_DRDY | ST_DSC if kind == "disk" else 0

    def _update_dma_capable(self) -> None:
        bits = (BM_DRIVE0_DMA if self.units[0].drive is not None else 0) | \
               (BM_DRIVE1_DMA if self.units[1].drive is not None else 0)
        self.bm_status = (self.bm_status & ~(BM_DRIVE0_DMA | BM_DRIVE1_DMA)) | bits

    # -- interrupt line ----------------------------------------------------------------------------
    def _raise(self) -> None:
        # Like QEMU, an interrupt that happens while nIEN is set is not remembered: drivers set nIEN
        # to poll and would otherwise take a stale interrupt when they clear it again.
        if not self.devctl & DC_NIEN:
            self.intrq = True
            self.bm_status |= BM_INTERRUPT
            self._update_line()

    def _update_line(self) -> None:
        level = self.intrq and not self.devctl & DC_NIEN
        if level != self.line:
            self.line = level
            self.host.irq(self.index, level)

    # -- command block -----------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        unit = self.units[self.current]
        if offset == 0:
            pos = unit.pos
            if unit.reading and pos < unit.end:
                end = pos + size
                value = int.from_bytes(unit.buf[pos:end], "little")
                unit.pos = end
                if end >= unit.end:
                    self._block_done(unit)
                return value
            return 0
        if offset == 7:
            if self.intrq:
                self.intrq = False
                self._update_line()
            return unit.status if unit.drive is not None else 0
        if unit.drive is None:
            return 0
        hob = self.devctl & DC_HOB
        if offset == 1:
            return unit.error
        if offset == 2:
            return unit.hob_nsector if hob else unit.nsector
        if offset == 3:
            return unit.hob_sector if hob else unit.sector
        if offset == 4:
            return unit.hob_lcyl if hob else unit.lcyl
        if offset == 5:
            return unit.hob_hcyl if hob else unit.hcyl
        if offset == 6:
            return unit.select
        return 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            unit = self.units[self.current]
            pos = unit.pos
            if not unit.reading and pos < unit.end:
                end = min(pos + size, unit.end)
                unit.buf[pos:end] = value.to_bytes(size, "little")[:end - pos]
                unit.pos = end
                if end >= unit.end:
                    self._block_done(unit)
            return
        value &= 0xFF
        if offset == 7:
            self._command(value)
            return
        # The task file is a bus: both devices latch every write, keeping the previous byte for
        # LBA48 (the "high order byte" read back with HOB).
        self.devctl &= ~DC_HOB
        if offset == 6:
            for unit in self.units:
                unit.select = value | 0xA0
            self.current = 1 if value & DEV_BIT else 0
            return
        name = ("feature", "nsector", "sector", "lcyl", "hcyl")[offset - 1]
        hob_name = "hob_" + name
        for unit in self.units:
            setattr(unit, hob_name, getattr(unit, name))
            setattr(unit, name, value)

    def read_string(self, offset: int, size: int, count: int) -> bytes:
        """`rep ins` on the data port: whole DRQ blocks per call, crossing into the next block of
        a multi-block command when the guest asks for that much."""
        if offset != 0:
            return b"".join(self.read(offset, size).to_bytes(size, "little") for _ in range(count))
        want = size * count
        parts = []
        while want:
            unit = self.units[self.current]
            pos = unit.pos
            if not unit.reading or pos >= unit.end:
                parts.append(bytes(want))
                break
            n = min(want, unit.end - pos)
            parts.append(unit.buf[pos:pos + n])
            unit.pos = pos + n
            want -= n
            if unit.pos >= unit.end:
                self._block_done(unit)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write_string(self, offset: int, size: int, data: bytes) -> None:
        if offset != 0:
            for i in range(0, len(data) - size + 1, size):
                self.write(offset, size, int.from_bytes(data[i:i + size], "little"))
            return
        view, done = memoryview(data), 0
        while done < len(view):
            unit = self.units[self.current]
            pos = unit.pos
            if unit.reading or pos >= unit.end:
                return
            n = min(len(view) - done, unit.end - pos)
            unit.buf[pos:pos + n] = view[done:done + n]
            unit.pos = pos + n
            done += n
            if unit.pos >= unit.end:
                self._block_done(unit)

    # -- control port ------------------------------------------------------------------------------
    def alt_status(self) -> int:
        unit = self.units[self.current]
        return unit.status if unit.drive is not None else 0

    def device_control(self, value: int) -> None:
        old = self.devctl
        self.devctl = value & (DC_HOB | DC_SRST | DC_NIEN)
        if value & DC_SRST and not old & DC_SRST:
            for unit in self.units:
                unit.clear_transfer()
                if unit.drive is not None:
                    unit.status = ST_BSY
            self.dma_unit = -1
            self.intrq = False
        elif old & DC_SRST and not value & DC_SRST:
            for unit in self.units:
                unit.select = 0xA0
                self._power_on_unit(unit)
            self.current = 0
        self._update_line()

    # -- command execution -------------------------------------------------------------------------
    def _command(self, opcode: int) -> None:
        unit = self.units[self.current]
        drive = unit.drive
        if drive is None or self.devctl & DC_SRST:
            return
        unit.clear_transfer()
        if self.dma_unit == self.current:
            self.dma_unit = -1
        if self.intrq:
            self.intrq = False              # writing the command register clears INTRQ
            self._update_line()
        table = _DISK_COMMANDS if drive.kind == "disk" else _CDROM_COMMANDS
        handler = table.get(opcode)
        if handler is None:
            if opcode == 0xEC and drive.kind == "cdrom":
                unit.set_signature()        # how a packet device tells IDENTIFY DEVICE apart
            self._abort(unit)
            return
        handler(self, unit, opcode)

    def _complete(self, unit: _Unit, irq: bool = True) -> None:
        unit.status = ST_DRDY | ST_DSC
        unit.error = 0
        unit.op = OP_NONE
        unit.reading = False
        unit.pos = unit.end = 0
        if irq:
            self._raise()

    def _abort(self, unit: _Unit, error: int = ER_ABRT) -> None:
        unit.clear_transfer()
        unit.status = ST_DRDY | ST_ERR
        unit.error = error
        self._raise()

    def _start_pio(self, unit: _Unit, op: str, data, reading: bool) -> None:
        unit.buf = data
        unit.pos = 0
        unit.end = len(data)
        unit.op = op
        unit.reading = reading
        unit.status = ST_DRDY | ST_DSC | ST_DRQ

    def _reset_result(self, index: int) -> int:
        """IDENTIFY word 93. Device 0 says whether it saw device 1 (SeaBIOS skips probing device 1
        when device 0 reports that it answers for it); device 1 reports its own half."""
        if index == 1:
            return 0x6B00
        return 0x603B if self.units[1].drive is not None else 0x604B

    def _block_done(self, unit: _Unit) -> None:
        op = unit.op
        if op == OP_READ:
            if unit.remaining:
                self._read_block(unit)
            else:
                self._set_address(unit, unit.lba - 1)
                unit.nsector = 0
                self._complete(unit, irq=False)
        elif op == OP_WRITE:
            self._write_block(unit)
        elif op == OP_CDB:
            self._packet_received(unit)
        elif op == OP_ATAPI_IN:
            self._atapi_data_in(unit)
        elif op == OP_ATAPI_OUT:
            unit.out_data += bytes(unit.buf)
            if len(unit.out_data) < unit.out_length:
                self._atapi_data_out(unit)
            else:
                unit.drive.receive(unit.cdb, unit.out_data)
                self._atapi_done(unit)
        else:                               # IDENTIFY and other single blocks
            self._complete(unit, irq=False)

    # -- ATA commands ------------------------------------------------------------------------------
    def _cmd_identify(self, unit: _Unit, opcode: int) -> None:
        drive = unit.drive
        if drive.kind == "disk":
            data = drive.identify(unit, self._reset_result(self.units.index(unit)))
        else:
            data = drive.identify(self._reset_result(self.units.index(unit)), unit.mwdma, unit.udma)
        self._start_pio(unit, OP_DATA_IN, data, True)
        self._raise()

    def _cmd_nop_ok(self, unit: _Unit, opcode: int) -> None:
        self._complete(unit)

    def _cmd_check_power(self, unit: _Unit, opcode: int) -> None:
        unit.nsector = 0xFF                 # active or idle
        self._complete(unit)

    def _cmd_flush(self, unit: _Unit, opcode: int) -> None:
        try:
            unit.drive.backend.flush()
        except (ImageError, OSError):
            self._abort(unit)
            return
        self._complete(unit)

    def _cmd_diagnostic(self, unit: _Unit, opcode: int) -> None:
        for u in self.units:
            if u.drive is not None:
                u.clear_transfer()
                self._power_on_unit(u)
        self.dma_unit = -1
        self._raise()

    def _cmd_device_reset(self, unit: _Unit, opcode: int) -> None:
        # No interrupt: the host polls BSY, as after SRST.
        self._power_on_unit(unit)

    def _cmd_set_features(self, unit: _Unit, opcode: int) -> None:
        sub = unit.feature
        if sub == 0x03:
            mode = unit.nsector
            kind, number = mode >> 3, mode & 7
            if mode in (0x00, 0x01) or (kind == 1 and number <= 4):
                pass                        # PIO modes need no bookkeeping
            elif kind == 4 and number <= 2:
                unit.mwdma, unit.udma = number, None
            elif kind == 8 and number <= 5:
                unit.mwdma, unit.udma = None, number
            else:
                self._abort(unit)
                return
        elif sub in (0x02, 0x82):
            unit.write_cache = sub == 0x02
        elif sub not in (0x05, 0x85, 0x42, 0xC2, 0x55, 0xAA, 0x66, 0xCC, 0x31, 0x95):
            self._abort(unit)
            return
        self._complete(unit)

    def _cmd_set_multiple(self, unit: _Unit, opcode: int) -> None:
        count = unit.nsector
        if count > MAX_MULTIPLE or count & (count - 1):
            self._abort(unit)
            return
        unit.multiple = count
        self._complete(unit)

    def _cmd_initialize_parameters(self, unit: _Unit, opcode: int) -> None:
        if not unit.nsector:
            self._abort(unit)
            return
        unit.heads = (unit.select & 0x0F) + 1
        unit.spt = unit.nsector
        self._complete(unit)

    def _address(self, unit: _Unit, ext: bool) -> tuple[int, int] | None:
        """(first LBA, sector count) of a read/write command, or None for an impossible CHS."""
        if ext:
            unit.addressing = "lba48"
            lba = (unit.hob_hcyl << 40 | unit.hob_lcyl << 32 | unit.hob_sector << 24
                   | unit.hcyl << 16 | unit.lcyl << 8 | unit.sector)
            return lba, (unit.hob_nsector << 8 | unit.nsector) or 65536
        count = unit.nsector or 256
        if unit.select & LBA_BIT:
            unit.addressing = "lba28"
            return (unit.select & 0x0F) << 24 | unit.hcyl << 16 | unit.lcyl << 8 | unit.sector, count
        unit.addressing = "chs"
        head, sector = unit.select & 0x0F, unit.sector
        if not 1 <= sector <= unit.spt or head >= unit.heads:
            return None
        return ((unit.hcyl << 8 | unit.lcyl) * unit.heads + head) * unit.spt + sector - 1, count

    def _set_address(self, unit: _Unit, lba: int) -> None:
        """Leave the address of the last sector handled in the task file, as an error report needs."""
        lba = max(lba, 0)
        if unit.addressing == "chs":
            cylinder, rest = divmod(lba, unit.heads * unit.spt)
            head, sector = divmod(rest, unit.spt)
            unit.lcyl, unit.hcyl = cylinder & 0xFF, (cylinder >> 8) & 0xFF
            unit.sector = sector + 1
            unit.select = (unit.select & 0xF0) | head
            return
        unit.sector, unit.lcyl, unit.hcyl = lba & 0xFF, (lba >> 8) & 0xFF, (lba >> 16) & 0xFF
        if unit.addressing == "lba48":
            unit.hob_sector, unit.hob_lcyl, unit.hob_hcyl = (lba >> 24) & 0xFF, (lba >> 32) & 0xFF, \
                (lba >> 40) & 0xFF
        else:
            unit.select = (unit.select & 0xF0) | ((lba >> 24) & 0x0F)

    def _prepare(self, unit: _Unit, ext: bool, writing: bool) -> bool:
        address = self._address(unit, ext)
        if address is None or address[0] + address[1] > unit.drive.sectors:
            self._abort(unit, ER_IDNF)
            return False
        if writing and unit.drive.backend.readonly:
            self._abort(unit)
            return False
        unit.lba, unit.remaining = address
        unit.first_lba = unit.lba
        return True

    def _cmd_read(self, unit: _Unit, opcode: int) -> None:
        multiple = opcode in (0xC4, 0x29)
        if multiple and not unit.multiple:
            self._abort(unit)
            return
        if self._prepare(unit, opcode in (0x24, 0x29), False):
            unit.block = unit.multiple if multiple else 1
            self._read_block(unit)

    def _read_block(self, unit: _Unit) -> None:
        n = min(unit.block, unit.remaining)
        try:
            data = unit.drive.backend.read(unit.lba * SECTOR, n * SECTOR)
        except (ImageError, OSError, ValueError):
            self._set_address(unit, unit.lba)
            self._abort(unit, ER_UNC)
            return
        unit.lba += n
        unit.remaining -= n
        self._start_pio(unit, OP_READ, data, True)
        self._raise()

    def _cmd_write(self, unit: _Unit, opcode: int) -> None:
        multiple = opcode in (0xC5, 0x39)
        if multiple and not unit.multiple:
            self._abort(unit)
            return
        if self._prepare(unit, opcode in (0x34, 0x39), True):
            unit.block = unit.multiple if multiple else 1
            self._start_pio(unit, OP_WRITE, bytearray(min(unit.block, unit.remaining) * SECTOR), False)

    def _write_block(self, unit: _Unit) -> None:
        n = unit.end // SECTOR
        try:
            unit.drive.backend.write(unit.lba * SECTOR, bytes(unit.buf[:unit.end]))
        except (ImageError, OSError, ValueError):
            self._set_address(unit, unit.lba)
            self._abort(unit, ER_UNC)
            return
        unit.lba += n
        unit.remaining -= n
        if unit.remaining:
            self._start_pio(unit, OP_WRITE, bytearray(min(unit.block, unit.remaining) * SECTOR), False)
        else:
            self._set_address(unit, unit.lba - 1)
            unit.nsector = 0
            self._complete(unit)
            return
        self._raise()

    def _cmd_verify(self, unit: _Unit, opcode: int) -> None:
        if self._prepare(unit, opcode == 0x42, False):
            self._set_address(unit, unit.lba + unit.remaining - 1)
            unit.nsector = 0
            self._complete(unit)

    def _cmd_dma(self, unit: _Unit, opcode: int) -> None:
        writing = opcode in (0xCA, 0xCB, 0x35)
        if self._prepare(unit, opcode in (0x25, 0x35), writing):
            self._queue_dma(unit, DMA_WRITE if writing else DMA_READ)

    def _queue_dma(self, unit: _Unit, kind: str) -> None:
        unit.dma = kind
        unit.status = ST_DRDY | ST_DSC | ST_DRQ
        self.dma_unit = self.units.index(unit)
        if self.bm_command & BM_START:
            self._run_dma()

    # -- ATAPI -------------------------------------------------------------------------------------
    def _cmd_packet(self, unit: _Unit, opcode: int) -> None:
        unit.atapi_dma = bool(unit.feature & 1)
        limit = unit.hcyl << 8 | unit.lcyl
        # 0 is not a valid limit and 0xFFFF is odd: both mean "as much as a block can carry".
        unit.byte_limit = 0xFFFE if limit in (0, 0xFFFF) else limit
        unit.nsector = (unit.nsector & 0xF8) | IR_COD
        # No interrupt for the command packet: IDENTIFY PACKET word 0 promises DRQ within 50 us.
        self._start_pio(unit, OP_CDB, bytearray(PACKET_SIZE), False)

    def _packet_received(self, unit: _Unit) -> None:
        unit.cdb = bytes(unit.buf)
        try:
            result = unit.drive.execute(unit.cdb)
        except CheckCondition as condition:
            self._atapi_error(unit, condition.key)
            return
        if isinstance(result, DataOut):
            unit.out_length = result.length
            unit.out_data = b""
            if unit.atapi_dma:
                self._queue_dma(unit, DMA_ATAPI_OUT)
            else:
                self._atapi_data_out(unit)
            return
        if isinstance(result, SectorRead):
            unit.reply = b""
            unit.read_lba, unit.read_count, unit.read_size = result
        else:
            unit.reply = result
            unit.read_count = 0
        if not unit.reply and not unit.read_count:
            self._atapi_done(unit)
        elif unit.atapi_dma:
            self._queue_dma(unit, DMA_ATAPI_IN)
        else:
            self._atapi_data_in(unit)

    def _atapi_take(self, unit: _Unit, size: int) -> bytes:
        """The next `size` bytes of a data-in phase: the pending reply first, then whole sectors,
        whose unsent part waits in `reply` for the next block."""
        data = unit.reply[:size]
        unit.reply = unit.reply[size:]
        need = size - len(data)
        if need and unit.read_count:
            n = min(-(-need // unit.read_size), unit.read_count)
            sectors = unit.drive.read_sectors(unit.read_lba, n, unit.read_size)
            unit.read_lba += n
            unit.read_count -= n
            data += sectors[:need]
            unit.reply = sectors[need:]
        return data

    def _atapi_data_in(self, unit: _Unit) -> None:
        left = len(unit.reply) + unit.read_count * unit.read_size
        if not left:
            self._atapi_done(unit)
            return
        size = left if left <= unit.byte_limit else max(unit.byte_limit & ~1, 2)
        try:
            data = self._atapi_take(unit, size)
        except CheckCondition as condition:
            self._atapi_error(unit, condition.key)
            return
        unit.lcyl, unit.hcyl = size & 0xFF, size >> 8
        unit.nsector = (unit.nsector & 0xF8) | IR_IO
        self._start_pio(unit, OP_ATAPI_IN, data, True)
        self._raise()

    def _atapi_data_out(self, unit: _Unit) -> None:
        left = unit.out_length - len(unit.out_data)
        size = left if left <= unit.byte_limit else max(unit.byte_limit & ~1, 2)
        unit.lcyl, unit.hcyl = size & 0xFF, size >> 8
        unit.nsector = unit.nsector & 0xF8
        self._start_pio(unit, OP_ATAPI_OUT, bytearray(size), False)
        self._raise()

    def _atapi_done(self, unit: _Unit) -> None:
        unit.clear_transfer()
        unit.nsector = (unit.nsector & 0xF8) | IR_IO | IR_COD
        self._complete(unit)

    def _atapi_error(self, unit: _Unit, key: int) -> None:
        unit.clear_transfer()
        unit.nsector = (unit.nsector & 0xF8) | IR_IO | IR_COD
        unit.status = ST_DRDY | ST_ERR
        unit.error = key << 4
        self._raise()

    # -- bus master --------------------------------------------------------------------------------
    def bm_read(self, offset: int) -> int:
        if offset == 0:
            return self.bm_command
        if offset == 2:
            return self.bm_status
        if 4 <= offset < 8:
            return (self.bm_prd >> (8 * (offset - 4))) & 0xFF
        return 0

    def bm_write(self, offset: int, value: int) -> None:
        if offset == 0:
            old, self.bm_command = self.bm_command, value & (BM_START | BM_TO_MEMORY)
            if value & BM_START and not old & BM_START:
                self.bm_status |= BM_ACTIVE
                self._run_dma()
            elif old & BM_START and not value & BM_START:
                self.bm_status &= ~BM_ACTIVE
        elif offset == 2:
            keep = self.bm_status & ~(value & (BM_ERROR | BM_INTERRUPT))
            self.bm_status = (keep & ~(BM_DRIVE0_DMA | BM_DRIVE1_DMA)) | \
                (value & (BM_DRIVE0_DMA | BM_DRIVE1_DMA))
        elif 4 <= offset < 8:
            shift = 8 * (offset - 4)
            self.bm_prd = ((self.bm_prd & ~(0xFF << shift)) | (value << shift)) & 0xFFFFFFFC

    def _run_dma(self) -> None:
        """Carry out the whole waiting DMA command at once (the bus master was started and a
        drive is ready), then report as the PIIX does: interrupt set, active cleared when the PRD
        table ended exactly with the data."""
        if self.dma_unit < 0:
            return
        unit = self.units[self.dma_unit]
        self.dma_unit = -1
        kind, unit.dma = unit.dma, DMA_NONE
        host = self.host
        walk = _PrdWalk(host.memory, self.bm_prd, host.on_dma_write) if host.memory is not None else None
        try:
            if walk is None:
                raise ValueError("no guest memory for DMA")
            if kind == DMA_READ or kind == DMA_WRITE:
                complete = self._dma_ata(unit, walk, kind == DMA_READ)
            elif kind == DMA_ATAPI_IN:
                complete = self._dma_atapi_in(unit, walk)
            else:
                data = walk.gather(unit.out_length)
                complete = len(data) == unit.out_length
                if complete:
                    unit.drive.receive(unit.cdb, data)
        except CheckCondition as condition:
            self.bm_status &= ~BM_ACTIVE
            self._atapi_error(unit, condition.key)
            return
        except (ImageError, OSError):
            self.bm_status &= ~BM_ACTIVE
            if unit.drive.kind == "cdrom":
                self._atapi_error(unit, MEDIUM_ERROR)
            else:
                self._abort(unit, ER_UNC)
            return
        except ValueError:                               # the PRD table or a buffer is not RAM
            self.bm_status = (self.bm_status & ~BM_ACTIVE) | BM_ERROR | BM_INTERRUPT
            self._abort(unit)
            return
        if not complete:
            # The PRD table was too short: the PIIX stops without an interrupt and the command
            # hangs until the driver times out and resets, as on real hardware.
            self.bm_status &= ~BM_ACTIVE
            unit.status = ST_DRDY | ST_DSC
            return
        if walk.exhausted:
            self.bm_status &= ~BM_ACTIVE
        self.bm_status |= BM_INTERRUPT
        if kind in (DMA_READ, DMA_WRITE):
            self._set_address(unit, unit.lba - 1)
            unit.nsector = 0
            self._complete(unit)
        else:
            self._atapi_done(unit)

    def _dma_ata(self, unit: _Unit, walk: _PrdWalk, reading: bool) -> bool:
        backend = unit.drive.backend
        while unit.remaining:
            n = min(unit.remaining, DMA_CHUNK // SECTOR)
            if reading:
                data = backend.read(unit.lba * SECTOR, n * SECTOR)
                placed = walk.scatter(data)
            else:
                data = walk.gather(n * SECTOR)
                placed = len(data) - len(data) % SECTOR
                if placed:
                    backend.write(unit.lba * SECTOR, data[:placed])
            done = placed // SECTOR
            unit.lba += done
            unit.remaining -= done
            if placed < n * SECTOR:
                return False
        return True

    def _dma_atapi_in(self, unit: _Unit, walk: _PrdWalk) -> bool:
        while unit.reply or unit.read_count:
            size = len(unit.reply) + min(unit.read_count, DMA_CHUNK // unit.read_size) * unit.read_size
            data = self._atapi_take(unit, size)
            if walk.scatter(data) < len(data):
                return False
        return True

    # -- state -------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"current": self.current, "devctl": self.devctl, "intrq": self.intrq, "line": self.line,
                "bm_command": self.bm_command, "bm_status": self.bm_status, "bm_prd": self.bm_prd,
                "dma_unit": self.dma_unit, "units": [unit.snapshot() for unit in self.units]}

    def restore(self, state: dict) -> None:
        for unit, unit_state in zip(self.units, state["units"]):
            unit.restore(unit_state)
        for name in ("current", "devctl", "intrq", "line", "bm_command", "bm_status", "bm_prd",
                     "dma_unit"):
            setattr(self, name, state[name])


class _ControlPort:
    """The channel's control port (0x3F6/0x376): alternate status, device control. Stateless."""

    def __init__(self, channel: IdeChannel):
        self.channel = channel
        self.name = f"{channel.name}-ctl"

    def read(self, offset: int, size: int) -> int:
        return self.channel.alt_status()

    def write(self, offset: int, size: int, value: int) -> None:
        self.channel.device_control(value & 0xFF)

    def snapshot(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass


class BusMasterPorts:
    """The 16 bus-master ports at BAR4: channel 0 at +0, channel 1 at +8. Stateless."""

    name = "ide-bm"

    def __init__(self, channels: list[IdeChannel]):
        self.channels = channels

    def read(self, offset: int, size: int) -> int:
        channel = self.channels[(offset >> 3) & 1]
        value = 0
        for i in range(size):
            value |= channel.bm_read((offset + i) & 7) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        channel = self.channels[(offset >> 3) & 1]
        for i in range(size):
            channel.bm_write((offset + i) & 7, (value >> (8 * i)) & 0xFF)

    def snapshot(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass


class IdeController:
    """Both channels of the PIIX IDE function. Sans-I/O: every command completes at once.

        ide = IdeController(irq=lambda channel, level: ..., memory=guest_memory,
                            on_dma_write=lambda gpa, length: ...)
        ide.attach(0, 0, HardDisk(disk_backend)); ide.attach(1, 0, CdromDrive(iso_backend))
        ide.register(bus)        # 0x1F0-0x1F7, 0x3F6, 0x170-0x177, 0x376: ide0, ide0-ctl, ide1, ide1-ctl
        pci_root.add(PiixIdeFunction("piix3", on_bar_change=move_bus_master), IDE_SLOT, IDE_FUNCTION)

    `irq(channel, level)` follows the channel's INTRQ gated by nIEN (ISA IRQ 14 for channel 0, 15
    for 1). `memory` (read(gpa, size) -> bytes, write(gpa, data)) is the DMA target and
    `on_dma_write(gpa, length)` follows every DMA write into it. `on_bar_change(4, old, new)` of
    the PCI function says where `ide.bus_master` (16 ports, stateless) must be mapped now; None
    means nowhere (BAR4 unprogrammed or I/O decoding off). The channels ide0/ide1 carry all state."""

    def __init__(self, irq: Callable[[int, bool], None] = lambda channel, level: None, *,
                 memory=None, on_dma_write: Callable[[int, int], None] | None = None):
        self.irq = irq
        self.memory = memory
        self.on_dma_write = on_dma_write
        self.channels = [IdeChannel(0, self), IdeChannel(1, self)]
        self.bus_master = BusMasterPorts(self.channels)

    def attach(self, channel: int, unit: int, drive) -> None:
        """Put a HardDisk, a CdromDrive or None (no device) at channel 0/1, unit 0 (master)/1."""
        self.channels[channel].attach(unit, drive)

    def drive(self, channel: int, unit: int):
        return self.channels[channel].units[unit].drive

    def register(self, bus) -> None:
        """Map the legacy ports of both channels onto `bus`."""
        for channel, (command_base, control_port, _) in zip(self.channels, CHANNELS):
            bus.register(channel, "pio", command_base, 8, name=channel.name)
            bus.register(channel.control, "pio", control_port, 1, name=channel.control.name)

    def reset(self) -> None:
        for channel in self.channels:
            channel.reset()

    def snapshot(self) -> dict:
        return {"channels": [channel.snapshot() for channel in self.channels]}

    def restore(self, state: dict) -> None:
        for channel, channel_state in zip(self.channels, state["channels"]):
            channel.restore(channel_state)


_COMMON_COMMANDS = {
    0x90: IdeChannel._cmd_diagnostic,
    0xE5: IdeChannel._cmd_check_power, 0x98: IdeChannel._cmd_check_power,
    0xEF: IdeChannel._cmd_set_features,
    # standby/idle (immediate), sleep, and their ATA-1 opcodes: no power states to model
    **{op: IdeChannel._cmd_nop_ok for op in (0xE0, 0xE1, 0xE2, 0xE3, 0xE6, 0x94, 0x95, 0x96, 0x97, 0x99)},
}
_DISK_COMMANDS = {
    **_COMMON_COMMANDS,
    0xEC: IdeChannel._cmd_identify,
    **{op: IdeChannel._cmd_read for op in (0x20, 0x21, 0x24, 0x29, 0xC4)},
    **{op: IdeChannel._cmd_write for op in (0x30, 0x31, 0x34, 0x39, 0xC5)},
    **{op: IdeChannel._cmd_dma for op in (0xC8, 0xC9, 0x25, 0xCA, 0xCB, 0x35)},
    **{op: IdeChannel._cmd_verify for op in (0x40, 0x41, 0x42)},
    **{op: IdeChannel._cmd_nop_ok for op in range(0x10, 0x20)},      # RECALIBRATE
    **{op: IdeChannel._cmd_nop_ok for op in range(0x70, 0x80)},      # SEEK
    0x91: IdeChannel._cmd_initialize_parameters,
    0xC6: IdeChannel._cmd_set_multiple,
    0xE7: IdeChannel._cmd_flush, 0xEA: IdeChannel._cmd_flush,
}
_CDROM_COMMANDS = {
    **_COMMON_COMMANDS,
    0x08: IdeChannel._cmd_device_reset,
    0xA0: IdeChannel._cmd_packet,
    0xA1: IdeChannel._cmd_identify,
}

IDE_SLOT, IDE_FUNCTION = 1, 1
BM_BAR = 4
IDETIM, SIDETIM, UDMACTL, UDMATIM = 0x40, 0x44, 0x48, 0x4A
PIIX_DEVICE_IDS = {"piix3": 0x7010, "piix4": 0x7111}


class PiixIdeFunction(PciFunction):
    """The IDE function's configuration space: class 01.01 prog-if 80h (legacy ports, bus master),
    BAR4 the 16 bus-master ports, IDETIM/SIDETIM (and PIIX4's UDMA registers) writable for the
    timing the BIOS and drivers program. `on_bar_change(4, old, new)` fires whenever the decoded
    bus-master base changes, including on reset and restore."""

    def __init__(self, model: str = "piix3",
                 on_bar_change: Callable[[int, int | None, int | None], None] | None = None):
        if model not in PIIX_DEVICE_IDS:
            raise ValueError(f"unknown IDE controller '{model}' (expected piix3 or piix4)")
        super().__init__(0x8086, PIIX_DEVICE_IDS[model], 0x010180, revision=1 if model == "piix4" else 0)
        self._set(STATUS, 2, 0x0280)        # fast back-to-back capable, medium DEVSEL timing
        self.add_bar(BM_BAR, BM_SIZE, BAR_IO)
        self.set_writable(IDETIM, 4)
        self.set_writable(SIDETIM, 1)
        if model == "piix4":
            self.set_writable(UDMACTL, 1, 0x0F)
            self.set_writable(UDMATIM, 2, 0x3333)
        self._power_on = bytes(self.config)
        self.on_bar_change = on_bar_change
        self.bus_master_base: int | None = None

    def _decoded_base(self) -> int | None:
        base = self.bar_address(BM_BAR)
        # Sizing writes all-ones; such an address is beyond the 64 KiB of port space, not decoded.
        if not self.command & COMMAND_IO or not base or base + BM_SIZE > 0x10000:
            return None
        return base

    def _follow_bar(self) -> None:
        new = self._decoded_base()
        if new != self.bus_master_base:
            old, self.bus_master_base = self.bus_master_base, new
            if self.on_bar_change is not None:
                self.on_bar_change(BM_BAR, old, new)

    def config_write(self, offset: int, size: int, value: int) -> None:
        super().config_write(offset, size, value)
        self._follow_bar()

    def reset(self) -> None:
        super().reset()
        self._follow_bar()

    def restore(self, state: dict) -> None:
        super().restore(state)
        self._follow_bar()


def boot_path(channel: int, unit: int, slot: int = IDE_SLOT, function: int = IDE_FUNCTION) -> str:
    """The OpenFirmware path SeaBIOS matches in fw_cfg "bootorder" for an IDE drive (disk or CD)."""
    return f"/pci@i0cf8/ide@{slot:x},{function:x}/drive@{channel:x}/disk@{unit:x}"


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
