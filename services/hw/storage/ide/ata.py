"""The ATA command set an IDE channel runs for its drives: IDENTIFY, SET FEATURES, power, diagnostics,
flush, and READ/WRITE (single, MULTIPLE, DMA) and VERIFY with CHS, LBA28 or LBA48 addresses."""

from __future__ import annotations

from services.hw.storage.ide.disk import MAX_MULTIPLE, SECTOR
from services.hw.storage.ide.unit import (
    DMA_READ,
    DMA_WRITE,
    ER_IDNF,
    ER_UNC,
    LBA_BIT,
    OP_DATA_IN,
    OP_READ,
    OP_WRITE,
    Unit,
)
from services.images.backend import ImageError


class AtaCommands:
    """The ATA commands of IdeChannel, a mixin of it. Each handler takes (unit, opcode) and leaves
    the unit's registers and transfer as the command says; it reports through the channel's
    _complete, _abort, _start_pio and _raise, and hands DMA to the bus master with _queue_dma."""

    # -- identification, settings, power -----------------------------------------------------------
    def _cmd_identify(self, unit: Unit, opcode: int) -> None:
        drive = unit.drive
        if drive.kind == "disk":
            data = drive.identify(unit, self._reset_result(self.units.index(unit)))
        else:
            data = drive.identify(self._reset_result(self.units.index(unit)), unit.mwdma, unit.udma)
        self._start_pio(unit, OP_DATA_IN, data, True)
        self._raise()

    def _reset_result(self, index: int) -> int:
        """IDENTIFY word 93. Device 0 says whether it saw device 1 (SeaBIOS skips probing device 1
        when device 0 reports that it answers for it); device 1 reports its own half."""
        if index == 1:
            return 0x6B00
        return 0x603B if self.units[1].drive is not None else 0x604B

    def _cmd_nop_ok(self, unit: Unit, opcode: int) -> None:
        self._complete(unit)

    def _cmd_check_power(self, unit: Unit, opcode: int) -> None:
        unit.nsector = 0xFF                 # active or idle
        self._complete(unit)

    def _cmd_flush(self, unit: Unit, opcode: int) -> None:
        try:
            unit.drive.backend.flush()
        except (ImageError, OSError):
            self._abort(unit)
            return
        self._complete(unit)

    def _cmd_diagnostic(self, unit: Unit, opcode: int) -> None:
        for u in self.units:
            if u.drive is not None:
                u.clear_transfer()
                self._power_on_unit(u)
        self.dma_unit = -1
        self._raise()

    def _cmd_set_features(self, unit: Unit, opcode: int) -> None:
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

    def _cmd_set_multiple(self, unit: Unit, opcode: int) -> None:
        count = unit.nsector
        if count > MAX_MULTIPLE or count & (count - 1):
            self._abort(unit)
            return
        unit.multiple = count
        self._complete(unit)

    def _cmd_initialize_parameters(self, unit: Unit, opcode: int) -> None:
        if not unit.nsector:
            self._abort(unit)
            return
        unit.heads = (unit.select & 0x0F) + 1
        unit.spt = unit.nsector
        self._complete(unit)

    # -- sector transfers --------------------------------------------------------------------------
    def _address(self, unit: Unit, ext: bool) -> tuple[int, int] | None:
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

    def _set_address(self, unit: Unit, lba: int) -> None:
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

    def _prepare(self, unit: Unit, ext: bool, writing: bool) -> bool:
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

    def _cmd_read(self, unit: Unit, opcode: int) -> None:
        multiple = opcode in (0xC4, 0x29)
        if multiple and not unit.multiple:
            self._abort(unit)
            return
        if self._prepare(unit, opcode in (0x24, 0x29), False):
            unit.block = unit.multiple if multiple else 1
            self._read_block(unit)

    def _read_block(self, unit: Unit) -> None:
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

    def _cmd_write(self, unit: Unit, opcode: int) -> None:
        multiple = opcode in (0xC5, 0x39)
        if multiple and not unit.multiple:
            self._abort(unit)
            return
        if self._prepare(unit, opcode in (0x34, 0x39), True):
            unit.block = unit.multiple if multiple else 1
            self._start_pio(unit, OP_WRITE, bytearray(min(unit.block, unit.remaining) * SECTOR), False)

    def _write_block(self, unit: Unit) -> None:
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

    def _cmd_verify(self, unit: Unit, opcode: int) -> None:
        if self._prepare(unit, opcode == 0x42, False):
            self._set_address(unit, unit.lba + unit.remaining - 1)
            unit.nsector = 0
            self._complete(unit)

    def _cmd_dma(self, unit: Unit, opcode: int) -> None:
        writing = opcode in (0xCA, 0xCB, 0x35)
        if self._prepare(unit, opcode in (0x25, 0x35), writing):
            self._queue_dma(unit, DMA_WRITE if writing else DMA_READ)


# The commands every drive answers, packet devices included (ATAPI keeps these from ATA).
COMMON_COMMANDS = {
    0x90: AtaCommands._cmd_diagnostic,
    0xE5: AtaCommands._cmd_check_power, 0x98: AtaCommands._cmd_check_power,
    0xEF: AtaCommands._cmd_set_features,
    # standby/idle (immediate), sleep, and their ATA-1 opcodes: no power states to model
    **{op: AtaCommands._cmd_nop_ok for op in (0xE0, 0xE1, 0xE2, 0xE3, 0xE6, 0x94, 0x95, 0x96, 0x97, 0x99)},
}
DISK_COMMANDS = {
    **COMMON_COMMANDS,
    0xEC: AtaCommands._cmd_identify,
    **{op: AtaCommands._cmd_read for op in (0x20, 0x21, 0x24, 0x29, 0xC4)},
    **{op: AtaCommands._cmd_write for op in (0x30, 0x31, 0x34, 0x39, 0xC5)},
    **{op: AtaCommands._cmd_dma for op in (0xC8, 0xC9, 0x25, 0xCA, 0xCB, 0x35)},
    **{op: AtaCommands._cmd_verify for op in (0x40, 0x41, 0x42)},
    **{op: AtaCommands._cmd_nop_ok for op in range(0x10, 0x20)},      # RECALIBRATE
    **{op: AtaCommands._cmd_nop_ok for op in range(0x70, 0x80)},      # SEEK
    0x91: AtaCommands._cmd_initialize_parameters,
    0xC6: AtaCommands._cmd_set_multiple,
    0xE7: AtaCommands._cmd_flush, 0xEA: AtaCommands._cmd_flush,
}
