"""The PIIX bus master of an IDE channel: its command, status and PRD table registers, the walk over a
PRD table in guest RAM, the DMA transfers it carries out for the drives, and its 16 ports at BAR4."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from services.hw.storage.atapi import MEDIUM_ERROR, CheckCondition
from services.hw.storage.ide.disk import SECTOR
from services.hw.storage.ide.unit import (
    DMA_ATAPI_IN,
    DMA_NONE,
    DMA_READ,
    DMA_WRITE,
    ER_UNC,
    ST_DRDY,
    ST_DRQ,
    ST_DSC,
    Unit,
)
from services.images.backend import ImageError

if TYPE_CHECKING:
    from services.hw.storage.ide.channel import IdeChannel

# Bus-master registers (per channel, 8 bytes)
BM_START, BM_TO_MEMORY = 0x01, 0x08
BM_ACTIVE, BM_ERROR, BM_INTERRUPT, BM_DRIVE0_DMA, BM_DRIVE1_DMA = 0x01, 0x02, 0x04, 0x20, 0x40
BM_CHANNEL_SIZE, BM_SIZE = 8, 16
PRD_EOT = 0x8000
PRD_LIMIT = 8192                    # a PRD table lives in one 64 KiB page
DMA_CHUNK = 128 * SECTOR            # bytes read from an image per step of a DMA transfer


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


class BusMasterDma:
    """The bus-master half of IdeChannel, a mixin of it. The channel keeps the registers (bm_command,
    bm_status, bm_prd) and dma_unit, the unit whose DMA command waits for the guest to start the
    bus master; a transfer ends through the channel's _complete, _abort or _atapi_error."""

    # -- drives and commands -----------------------------------------------------------------------
    def _update_dma_capable(self) -> None:
        """Status bits 5 and 6 tell the guest's driver which positions have a drive for DMA."""
        bits = (BM_DRIVE0_DMA if self.units[0].drive is not None else 0) | \
               (BM_DRIVE1_DMA if self.units[1].drive is not None else 0)
        self.bm_status = (self.bm_status & ~(BM_DRIVE0_DMA | BM_DRIVE1_DMA)) | bits

    def _queue_dma(self, unit: Unit, kind: str) -> None:
        """Leave a DMA command waiting for the guest to start the bus master (it may already have)."""
        unit.dma = kind
        unit.status = ST_DRDY | ST_DSC | ST_DRQ
        self.dma_unit = self.units.index(unit)
        if self.bm_command & BM_START:
            self._run_dma()

    # -- registers ---------------------------------------------------------------------------------
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

    # -- transfers ---------------------------------------------------------------------------------
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

    def _dma_ata(self, unit: Unit, walk: _PrdWalk, reading: bool) -> bool:
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

    def _dma_atapi_in(self, unit: Unit, walk: _PrdWalk) -> bool:
        while unit.reply or unit.read_count:
            size = len(unit.reply) + min(unit.read_count, DMA_CHUNK // unit.read_size) * unit.read_size
            data = self._atapi_take(unit, size)
            if walk.scatter(data) < len(data):
                return False
        return True


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
