"""One IDE channel: the task-file registers of its two drive positions, drive selection, status and
alternate status, PIO data transfers, device control and resets, and the interrupt line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.hw.storage.ide.ata import DISK_COMMANDS, AtaCommands
from services.hw.storage.ide.busmaster import BM_INTERRUPT, BusMasterDma
from services.hw.storage.ide.packet import CDROM_COMMANDS, PacketCommands
from services.hw.storage.ide.unit import (
    DC_HOB,
    DC_NIEN,
    DC_SRST,
    DEV_BIT,
    ER_ABRT,
    OP_ATAPI_IN,
    OP_ATAPI_OUT,
    OP_CDB,
    OP_NONE,
    OP_READ,
    OP_WRITE,
    ST_BSY,
    ST_DRDY,
    ST_DRQ,
    ST_DSC,
    ST_ERR,
    TASK_FILE,
    Unit,
)

if TYPE_CHECKING:
    from services.hw.storage.ide.controller import IdeController


class IdeChannel(AtaCommands, PacketCommands, BusMasterDma):
    """One ATA channel as a device on its command block (offsets 0-7): data, error/features, sector
    count, LBA low/mid/high, device, status/command. `control` is the device for its control port
    (alternate status / device control). Holds the channel's bus-master registers too.

    The commands and the bus master are mixins: ATA in ata.py, ATAPI in packet.py, DMA in
    busmaster.py. This class keeps the registers, the PIO data and the interrupt line."""

    def __init__(self, index: int, host: IdeController):
        self.index = index
        self.name = f"ide{index}"
        self.host = host
        self.units = [Unit(), Unit()]
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
            for name in TASK_FILE:
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

    def _power_on_unit(self, unit: Unit) -> None:
        unit.set_signature()
        unit.error = 0x01                   # diagnostic passed
        kind = unit.drive.kind if unit.drive is not None else None
        # Packet devices leave DRDY clear after a reset until the host speaks to them.
        unit.status = ST_DRDY | ST_DSC if kind == "disk" else 0

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
        table = DISK_COMMANDS if drive.kind == "disk" else CDROM_COMMANDS
        handler = table.get(opcode)
        if handler is None:
            if opcode == 0xEC and drive.kind == "cdrom":
                unit.set_signature()        # how a packet device tells IDENTIFY DEVICE apart
            self._abort(unit)
            return
        handler(self, unit, opcode)

    def _complete(self, unit: Unit, irq: bool = True) -> None:
        unit.status = ST_DRDY | ST_DSC
        unit.error = 0
        unit.op = OP_NONE
        unit.reading = False
        unit.pos = unit.end = 0
        if irq:
            self._raise()

    def _abort(self, unit: Unit, error: int = ER_ABRT) -> None:
        unit.clear_transfer()
        unit.status = ST_DRDY | ST_ERR
        unit.error = error
        self._raise()

    def _start_pio(self, unit: Unit, op: str, data, reading: bool) -> None:
        unit.buf = data
        unit.pos = 0
        unit.end = len(data)
        unit.op = op
        unit.reading = reading
        unit.status = ST_DRDY | ST_DSC | ST_DRQ

    def _block_done(self, unit: Unit) -> None:
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
