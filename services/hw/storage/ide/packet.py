"""ATAPI over an IDE channel: the PACKET command, its 12-byte command packet, and data phases sized by
the byte count limit, between the channel and the CD/DVD drive's SCSI/MMC commands (storage/atapi.py)."""

from __future__ import annotations

from services.hw.storage.atapi import PACKET_SIZE, CheckCondition, DataOut, SectorRead
from services.hw.storage.ide.ata import COMMON_COMMANDS, AtaCommands
from services.hw.storage.ide.unit import (
    DMA_ATAPI_IN,
    DMA_ATAPI_OUT,
    IR_COD,
    IR_IO,
    OP_ATAPI_IN,
    OP_ATAPI_OUT,
    OP_CDB,
    ST_DRDY,
    ST_ERR,
    Unit,
)


class PacketCommands:
    """The packet-device commands of IdeChannel, a mixin of it: DEVICE RESET, PACKET and the phases
    that follow it. A packet's data moves by PIO here or, with the DMA feature bit, by the bus
    master (_queue_dma); a CheckCondition from the drive ends the command with its sense key."""

    def _cmd_device_reset(self, unit: Unit, opcode: int) -> None:
        # No interrupt: the host polls BSY, as after SRST.
        self._power_on_unit(unit)

    def _cmd_packet(self, unit: Unit, opcode: int) -> None:
        unit.atapi_dma = bool(unit.feature & 1)
        limit = unit.hcyl << 8 | unit.lcyl
        # 0 is not a valid limit and 0xFFFF is odd: both mean "as much as a block can carry".
        unit.byte_limit = 0xFFFE if limit in (0, 0xFFFF) else limit
        unit.nsector = (unit.nsector & 0xF8) | IR_COD
        # No interrupt for the command packet: IDENTIFY PACKET word 0 promises DRQ within 50 us.
        self._start_pio(unit, OP_CDB, bytearray(PACKET_SIZE), False)

    def _packet_received(self, unit: Unit) -> None:
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

    def _atapi_take(self, unit: Unit, size: int) -> bytes:
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

    def _atapi_data_in(self, unit: Unit) -> None:
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

    def _atapi_data_out(self, unit: Unit) -> None:
        left = unit.out_length - len(unit.out_data)
        size = left if left <= unit.byte_limit else max(unit.byte_limit & ~1, 2)
        unit.lcyl, unit.hcyl = size & 0xFF, size >> 8
        unit.nsector = unit.nsector & 0xF8
        self._start_pio(unit, OP_ATAPI_OUT, bytearray(size), False)
        self._raise()

    def _atapi_done(self, unit: Unit) -> None:
        unit.clear_transfer()
        unit.nsector = (unit.nsector & 0xF8) | IR_IO | IR_COD
        self._complete(unit)

    def _atapi_error(self, unit: Unit, key: int) -> None:
        unit.clear_transfer()
        unit.nsector = (unit.nsector & 0xF8) | IR_IO | IR_COD
        unit.status = ST_DRDY | ST_ERR
        unit.error = key << 4
        self._raise()


CDROM_COMMANDS = {
    **COMMON_COMMANDS,
    0x08: PacketCommands._cmd_device_reset,
    0xA0: PacketCommands._cmd_packet,
    0xA1: AtaCommands._cmd_identify,
}
