"""One drive position (master or slave) of an IDE channel: its task-file registers and the bits in
them, the settings the guest made, and the transfer in progress; present when no drive is attached."""

from __future__ import annotations

from services.hw.storage.ide.disk import DEFAULT_HEADS, DEFAULT_SPT, MAX_MULTIPLE

# Status, error and device control bits
ST_ERR, ST_DRQ, ST_DSC, ST_DF, ST_DRDY, ST_BSY = 0x01, 0x08, 0x10, 0x20, 0x40, 0x80
ER_ABRT, ER_IDNF, ER_UNC = 0x04, 0x10, 0x40
DC_NIEN, DC_SRST, DC_HOB = 0x02, 0x04, 0x80
DEV_BIT, LBA_BIT = 0x10, 0x40
# ATAPI interrupt reason (sector count register)
IR_COD, IR_IO = 0x01, 0x02

# PIO phases a unit can be in (what happens when the current DRQ block is done)
OP_NONE, OP_DATA_IN, OP_READ, OP_WRITE, OP_CDB, OP_ATAPI_IN, OP_ATAPI_OUT = (
    "", "data-in", "read", "write", "cdb", "atapi-in", "atapi-out")
# DMA commands a unit can have waiting for the bus master
DMA_NONE, DMA_READ, DMA_WRITE, DMA_ATAPI_IN, DMA_ATAPI_OUT = "", "read", "write", "atapi-in", "atapi-out"

TASK_FILE = ("error", "feature", "nsector", "sector", "lcyl", "hcyl", "hob_feature", "hob_nsector",
             "hob_sector", "hob_lcyl", "hob_hcyl", "select", "status")
_SETTINGS = ("multiple", "heads", "spt", "mwdma", "udma", "write_cache")
_TRANSFER = ("pos", "end", "op", "reading", "lba", "remaining", "block", "addressing", "first_lba",
             "byte_limit", "cdb", "atapi_dma", "reply", "read_lba", "read_count", "read_size",
             "out_length", "out_data", "dma")


class Unit:
    """One drive position (master or slave) of a channel: its task-file registers, the settings
    the guest made, and the transfer in progress. Present even when no drive is attached."""

    __slots__ = ("drive",) + TASK_FILE + _SETTINGS + _TRANSFER + ("buf",)

    def __init__(self):
        self.drive = None
        for name in TASK_FILE:
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
        state = {name: getattr(self, name) for name in TASK_FILE + _SETTINGS + _TRANSFER}
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
        for name in TASK_FILE + _SETTINGS + _TRANSFER:
            setattr(self, name, state[name])
        for name in ("cdb", "reply", "out_data"):
            setattr(self, name, bytes(state[name]))
        self.buf = bytes(state["buf"]) if self.reading else bytearray(state["buf"])
        if kind == "cdrom":
            self.drive.restore(state["cdrom"])
