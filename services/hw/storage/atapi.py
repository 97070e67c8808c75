"""The CD/DVD drive behind an ATAPI interface: its SCSI/MMC command set, sense data and medium state,
and the IDENTIFY PACKET DEVICE page; the IDE layer (ide/packet.py) carries the packets and the data."""

from __future__ import annotations

import struct
from typing import NamedTuple

from services.images.backend import ImageError

CD_SECTOR = 2048
RAW_SECTOR = 2352
CD_MAX_SECTORS = 80 * 60 * 75           # an 80-minute CD; anything larger is reported as a DVD
PACKET_SIZE = 12

# Sense keys and (additional sense code, qualifier) pairs
NO_SENSE, NOT_READY, MEDIUM_ERROR, ILLEGAL_REQUEST, UNIT_ATTENTION = 0x0, 0x2, 0x3, 0x5, 0x6
ASC_NONE = (0x00, 0x00)
ASC_MEDIUM_NOT_PRESENT = (0x3A, 0x00)
ASC_MEDIUM_CHANGED = (0x28, 0x00)
ASC_POWER_ON_RESET = (0x29, 0x00)
ASC_INVALID_OPCODE = (0x20, 0x00)
ASC_LBA_OUT_OF_RANGE = (0x21, 0x00)
ASC_INVALID_FIELD = (0x24, 0x00)
ASC_SAVING_NOT_SUPPORTED = (0x39, 0x00)
ASC_REMOVAL_PREVENTED = (0x53, 0x02)
ASC_READ_ERROR = (0x11, 0x00)
ASC_INCOMPATIBLE_FORMAT = (0x30, 0x02)

PROFILE_CD_ROM, PROFILE_DVD_ROM = 0x0008, 0x0010

# GET EVENT STATUS NOTIFICATION media events
MEDIA_NO_CHANGE, MEDIA_EJECT_REQUEST, MEDIA_NEW, MEDIA_REMOVAL = 0, 1, 2, 3


class CheckCondition(Exception):
    """A command that ends with CHECK CONDITION; the drive has recorded the sense data."""

    def __init__(self, key: int, asc: tuple[int, int]):
        super().__init__(f"sense {key:x}/{asc[0]:02x}/{asc[1]:02x}")
        self.key = key
        self.asc = asc


class SectorRead(NamedTuple):
    """A data-in phase of `count` sectors from `lba`, fetched lazily with CdromDrive.read_sectors."""
    lba: int
    count: int
    sector_size: int                    # 2048 (user data) or 2352 (raw, synthesised)


class DataOut(NamedTuple):
    """A data-out phase of `length` bytes, handed to CdromDrive.receive when complete."""
    length: int


def ata_string(text: str, length: int) -> bytes:
    """An IDENTIFY string field: space padded, bytes swapped within each 16-bit word."""
    raw = text.encode("ascii", "replace")[:length].ljust(length, b" ")
    swapped = bytearray(length)
    swapped[0::2] = raw[1::2]
    swapped[1::2] = raw[0::2]
    return bytes(swapped)


def identify_page(words: dict[int, int], strings: dict[int, bytes]) -> bytes:
    """256 little-endian words with the strings placed at their first word and the integrity
    word (255: signature 0xA5 and a checksum making the byte sum zero) filled in, which Linux checks."""
    page = bytearray(512)
    for index, value in words.items():
        struct.pack_into("<H", page, 2 * index, value & 0xFFFF)
    for index, data in strings.items():
        page[2 * index:2 * index + len(data)] = data
    page[510] = 0xA5
    page[511] = -sum(page[:511]) & 0xFF
    return bytes(page)


def lba_to_msf(lba: int) -> bytes:
    """Reserved, minute, second, frame: the 4-byte MSF address of a logical block."""
    lba += 150                          # the 2-second pregap before track 1
    return bytes((0, (lba // 75) // 60 & 0xFF, (lba // 75) % 60, lba % 75))


ALLOW_UA, CHECK_READY = 1, 2


class CdromDrive:
    """An ATAPI CD/DVD-ROM drive; `backend` is the inserted medium (None for an empty drive).

    Host-side `insert(backend)` and `eject()` change the medium as a user would; the guest sees
    a unit attention (medium may have changed) and a media event."""

    kind = "cdrom"

    def __init__(self, backend=None, *, model: str = "HEADBOX CD-ROM", serial: str = "HBCD0001",
                 firmware: str = "1.0", vendor: str = "HEADBOX"):
        self.model, self.serial, self.firmware, self.vendor = model, serial, firmware, vendor
        self.backend = backend
        self.tray_open = False
        self.locked = False
        self.sense_key, self.sense_asc = NO_SENSE, ASC_NONE
        self.unit_attention: tuple[int, int] | None = None
        self.media_event = MEDIA_NO_CHANGE

    # -- host side -------------------------------------------------------------------------------
    def insert(self, backend) -> None:
        self.backend = backend
        self.tray_open = False
        self.unit_attention = ASC_MEDIUM_CHANGED
        self.media_event = MEDIA_NEW

    def eject(self):
        """Remove the medium (even when the guest has locked the tray: the user wins) and return it."""
        backend, self.backend = self.backend, None
        if backend is not None:
            self.unit_attention = ASC_MEDIUM_CHANGED
            self.media_event = MEDIA_REMOVAL
        return backend

    @property
    def medium_present(self) -> bool:
        return self.backend is not None and not self.tray_open

    @property
    def sectors(self) -> int:
        return self.backend.size // CD_SECTOR if self.medium_present else 0

    def reset(self) -> None:
        """A device reset (power on, DEVICE RESET): sense and lock go, the medium stays."""
        self.locked = False
        self.sense_key, self.sense_asc = NO_SENSE, ASC_NONE

    # -- IDENTIFY PACKET DEVICE --------------------------------------------------------------------
    def identify(self, reset_result: int, mwdma_mode: int | None, udma_mode: int | None) -> bytes:
        words = {
            0: 0x85C0,                  # ATAPI, CD-ROM, removable, DRQ within 50 us, 12-byte packets
            49: 0x0B00,                 # IORDY, LBA, DMA
            50: 0x4000,
            53: 0x0006,                 # words 64-70 and 88 are valid
            63: 0x0007 | ((1 << mwdma_mode) << 8 if mwdma_mode is not None else 0),
            64: 0x0003,                 # PIO modes 3 and 4
            65: 120, 66: 120, 67: 120, 68: 120,
            80: 0x007E,                 # ATA/ATAPI-1 to -6
            82: 0x4010, 83: 0x4000, 84: 0x4000,    # PACKET feature set
            85: 0x4010, 86: 0x0000, 87: 0x4000,
            88: 0x003F | ((1 << udma_mode) << 8 if udma_mode is not None else 0),
            93: reset_result,
        }
        strings = {10: ata_string(self.serial, 20), 23: ata_string(self.firmware, 8),
                   27: ata_string(self.model, 40)}
        return identify_page(words, strings)

    # -- commands ----------------------------------------------------------------------------------
    def execute(self, cdb: bytes):
        """Run one command packet. Returns the data-in reply (bytes, already cut to the allocation
        length; empty for none), a SectorRead, or a DataOut; raises CheckCondition on error."""
        opcode = cdb[0]
        entry = _COMMANDS.get(opcode)
        flags = entry[1] if entry else 0
        if opcode != 0x03:
            # Sense data describes the command just failed; any other command starts afresh.
            self.sense_key, self.sense_asc = NO_SENSE, ASC_NONE
        if self.unit_attention is not None and not flags & ALLOW_UA:
            asc, self.unit_attention = self.unit_attention, None
            self._fail(UNIT_ATTENTION, asc)
        if entry is None:
            self._fail(ILLEGAL_REQUEST, ASC_INVALID_OPCODE)
        if flags & CHECK_READY and not self.medium_present:
            self._fail(NOT_READY, ASC_MEDIUM_NOT_PRESENT)
        return entry[0](self, cdb)

    def _fail(self, key: int, asc: tuple[int, int]):
        self.sense_key, self.sense_asc = key, asc
        raise CheckCondition(key, asc)

    def read_sectors(self, lba: int, count: int, sector_size: int = CD_SECTOR) -> bytes:
        """The data of a SectorRead; CheckCondition if the medium went away or fails."""
        if not self.medium_present:
            self._fail(NOT_READY, ASC_MEDIUM_NOT_PRESENT)
        try:
            data = self.backend.read(lba * CD_SECTOR, count * CD_SECTOR)
        except (ImageError, OSError, ValueError):
            self._fail(MEDIUM_ERROR, ASC_READ_ERROR)
        if sector_size == CD_SECTOR:
            return data
        return b"".join(_raw_sector(lba + i, data[i * CD_SECTOR:(i + 1) * CD_SECTOR])
                        for i in range(count))

    def receive(self, cdb: bytes, data: bytes) -> None:
        """The parameter list of a data-out command (MODE SELECT): accepted, nothing is changeable."""

    # Each handler takes the CDB and returns what execute() returns.
    def _test_unit_ready(self, cdb):
        return b""

    def _request_sense(self, cdb):
        key, asc = self.sense_key, self.sense_asc
        if key == NO_SENSE:
            if self.unit_attention is not None:
                key, asc, self.unit_attention = UNIT_ATTENTION, self.unit_attention, None
            elif not self.medium_present:
                key, asc = NOT_READY, ASC_MEDIUM_NOT_PRESENT
        self.sense_key, self.sense_asc = NO_SENSE, ASC_NONE
        sense = bytearray(18)
        sense[0] = 0x70                 # current error, fixed format
        sense[2] = key
        sense[7] = 10
        sense[12], sense[13] = asc
        return bytes(sense[:cdb[4]])

    def _inquiry(self, cdb):
        if cdb[1] & 1:                  # vital product data pages: none offered
            self._fail(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
        data = (bytes((0x05, 0x80, 0x00, 0x32, 31, 0, 0, 0))
                + self.vendor.encode("ascii", "replace")[:8].ljust(8)
                + self.model.encode("ascii", "replace")[:16].ljust(16)
                + self.firmware.encode("ascii", "replace")[:4].ljust(4))
        return data[:(cdb[3] << 8) | cdb[4]]

    def _start_stop_unit(self, cdb):
        start, load_eject = cdb[4] & 1, cdb[4] & 2
        if cdb[4] & 0xF0 or not load_eject:
            return b""                  # power conditions and spin up/down: nothing to do
        if not start:
            if self.locked:
                self._fail(NOT_READY if self.medium_present else ILLEGAL_REQUEST, ASC_REMOVAL_PREVENTED)
            if not self.tray_open and self.backend is not None:
                self.media_event = MEDIA_REMOVAL
            self.tray_open = True
        else:
            if self.tray_open and self.backend is not None:
                self.media_event = MEDIA_NEW
            self.tray_open = False
        return b""

    def _prevent_allow(self, cdb):
        self.locked = bool(cdb[4] & 1)
        return b""

    def _read_capacity(self, cdb):
        return struct.pack(">II", self.sectors - 1, CD_SECTOR)

    def _read(self, cdb):
        if cdb[0] == 0x28:
            lba, count = struct.unpack_from(">IxH", cdb, 2)
        else:
            lba, count = struct.unpack_from(">II", cdb, 2)
        return self._sector_read(lba, count, CD_SECTOR)

    def _sector_read(self, lba: int, count: int, sector_size: int):
        if lba + count > self.sectors:
            self._fail(ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)
        if not count:
            return b""
        return SectorRead(lba, count, sector_size)

    def _read_cd(self, cdb):
        lba = struct.unpack_from(">I", cdb, 2)[0]
        count = int.from_bytes(cdb[6:9], "big")
        if cdb[1] & 0x1C not in (0x00, 0x08):     # any type, or CD-ROM mode 1: all a data disc holds
            self._fail(ILLEGAL_REQUEST, ASC_INCOMPATIBLE_FORMAT)
        fields = cdb[9] & 0xF8
        if fields == 0x00:
            return self._sector_read(lba, 0, CD_SECTOR)
        if fields == 0x10:
            return self._sector_read(lba, count, CD_SECTOR)
        if fields == 0xF8:
            return self._sector_read(lba, count, RAW_SECTOR)
        self._fail(ILLEGAL_REQUEST, ASC_INVALID_FIELD)

    def _seek(self, cdb):
        if struct.unpack_from(">I", cdb, 2)[0] >= self.sectors:
            self._fail(ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)
        return b""

    def _read_toc(self, cdb):
        msf = bool(cdb[1] & 2)
        fmt = cdb[2] & 0x0F or cdb[9] >> 6    # MMC puts it in byte 2, older drivers in byte 9
        start_track = cdb[6]
        length = (cdb[7] << 8) | cdb[8]

        def address(lba: int) -> bytes:
            return lba_to_msf(lba) if msf else struct.pack(">I", lba)

        if fmt == 0:
            if start_track > 1 and start_track != 0xAA:
                self._fail(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
            body = b""
            if start_track <= 1:
                body += bytes((0, 0x14, 1, 0)) + address(0)          # track 1: data, ADR 1
            body += bytes((0, 0x14, 0xAA, 0)) + address(self.sectors)  # lead-out
            data = struct.pack(">HBB", len(body) + 2, 1, 1) + body
        elif fmt == 1:
            # One complete session whose first track starts at LBA 0.
            data = struct.pack(">HBB", 10, 1, 1) + bytes((0, 0x14, 1, 0)) + address(0)
        else:
            self._fail(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
        return data[:length]

    def _current_profile(self) -> int:
        if not self.medium_present:
            return 0
        return PROFILE_DVD_ROM if self.sectors > CD_MAX_SECTORS else PROFILE_CD_ROM

    def _get_configuration(self, cdb):
        request_type = cdb[1] & 3
        first = (cdb[2] << 8) | cdb[3]
        length = (cdb[7] << 8) | cdb[8]
        profile = self._current_profile()
        present = self.medium_present
        profiles = b"".join(struct.pack(">HBx", p, p == profile) for p in (PROFILE_DVD_ROM, PROFILE_CD_ROM))
        features = [  # (code, version, current, data)
            (0x0000, 0, True, profiles),
            (0x0001, 1, True, struct.pack(">IB3x", 2, 1)),       # core: ATAPI, device busy events
            (0x0002, 1, True, bytes((0x02, 0, 0, 0))),           # morphing: async GESN not, OCEvent
            (0x0003, 0, True, bytes((0x29, 0, 0, 0))),           # removable: tray, eject, lock
            (0x0010, 0, present, struct.pack(">IHBx", CD_SECTOR, 1, 0)),  # random readable
            (0x001E, 2, profile == PROFILE_CD_ROM, bytes(4)),    # CD read
            (0x001F, 1, profile == PROFILE_DVD_ROM, bytes(4)),   # DVD read
        ]
        body = b""
        for code, version, current, data in features:
            if code < first or (request_type == 1 and not current) or (request_type == 2 and code != first):
                continue
            body += struct.pack(">HBB", code, version << 2 | 2 | current, len(data)) + data
        data = struct.pack(">I2xH", len(body) + 4, profile) + body
        return data[:length]

    def _event_status(self, cdb):
        if not cdb[1] & 1:              # asynchronous notification is optional; we poll only
            self._fail(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
        length = (cdb[7] << 8) | cdb[8]
        supported = 1 << 4
        if cdb[4] & (1 << 4):
            event, self.media_event = self.media_event, MEDIA_NO_CHANGE
            status = (1 if self.tray_open else 0) | (2 if self.medium_present else 0)
            data = struct.pack(">HBB", 4, 4, supported) + bytes((event, status, 0, 0))
        else:
            data = struct.pack(">HBB", 0, 0x80, supported)   # no event of the classes asked
        return data[:length]

    def _read_disc_information(self, cdb):
        if cdb[1] & 7:
            self._fail(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
        data = bytearray(34)
        data[1] = 32
        data[2] = 0x0E                  # last session complete, disc complete
        data[3:7] = b"\x01\x01\x01\x01"  # first track, sessions, first and last track of last session
        data[7] = 0x20                  # unrestricted use
        return bytes(data[:(cdb[7] << 8) | cdb[8]])

    def _mode_pages(self, page: int, changeable: bool) -> bytes:
        pages = {}
        if page in (0x01, 0x3F):        # read error recovery
            pages[0x01] = bytes((0x01, 6, 0, 5, 0, 0, 0, 0))
        if page in (0x0E, 0x3F):        # CD audio control
            pages[0x0E] = bytes((0x0E, 14)) + bytes(14)
        if page in (0x2A, 0x3F):        # CD/DVD capabilities and mechanical status
            caps = bytearray(22)
            caps[0], caps[1] = 0x2A, 20
            caps[2] = 0x3F              # reads CD-R, CD-RW, method 2, DVD-ROM, DVD-R, DVD-RAM
            caps[4] = 0x71              # audio play (Linux wants it to automount), mode 2, multisession
            caps[6] = 0x29 | (2 if self.locked else 0)  # tray, eject, lock (and its state)
            struct.pack_into(">HHHH", caps, 8, 706, 2, 512, 706)   # max 4x, volumes, buffer KiB, 4x
            pages[0x2A] = bytes(caps)
        if not pages:
            self._fail(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
        if changeable:                  # nothing can be changed: all-zero masks
            return b"".join(p[:2] + bytes(len(p) - 2) for p in pages.values())
        return b"".join(pages.values())

    def _medium_type(self) -> int:
        if self.tray_open:
            return 0x71
        return 0x01 if self.medium_present else 0x70

    def _mode_sense(self, cdb):
        control, page = cdb[2] >> 6, cdb[2] & 0x3F
        if control == 3:
            self._fail(ILLEGAL_REQUEST, ASC_SAVING_NOT_SUPPORTED)
        pages = self._mode_pages(page, control == 1)
        if cdb[0] == 0x1A:
            data = bytes((len(pages) + 3, self._medium_type(), 0, 0)) + pages
            return data[:cdb[4]]
        data = struct.pack(">HBB4x", len(pages) + 6, self._medium_type(), 0) + pages
        return data[:(cdb[7] << 8) | cdb[8]]

    def _mode_select(self, cdb):
        length = cdb[4] if cdb[0] == 0x15 else (cdb[7] << 8) | cdb[8]
        return DataOut(length) if length else b""

    def _set_speed(self, cdb):
        return b""

    def _mechanism_status(self, cdb):
        data = bytes((0, 0x10 if self.tray_open else 0, 0, 0, 0, 0, 0, 0))
        return data[:(cdb[8] << 8) | cdb[9]]

    # -- state -------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"tray_open": self.tray_open, "locked": self.locked, "sense_key": self.sense_key,
                "sense_asc": list(self.sense_asc),
                "unit_attention": list(self.unit_attention) if self.unit_attention else None,
                "media_event": self.media_event, "medium": self.backend is not None}

    def restore(self, state: dict) -> None:
        self.tray_open = bool(state["tray_open"])
        self.locked = bool(state["locked"])
        self.sense_key = int(state["sense_key"])
        self.sense_asc = tuple(state["sense_asc"])
        self.unit_attention = tuple(state["unit_attention"]) if state["unit_attention"] else None
        self.media_event = int(state["media_event"])
        if bool(state["medium"]) != (self.backend is not None):
            # The medium is configuration, not state: a mismatch means the saved VM had a
            # different disc in; the guest must learn that the disc changed.
            self.unit_attention = ASC_MEDIUM_CHANGED
            self.media_event = MEDIA_NEW if self.backend is not None else MEDIA_REMOVAL


def _raw_sector(lba: int, user_data: bytes) -> bytes:
    """A mode-1 sector as READ CD returns it raw: sync, header, data; EDC/ECC left zero."""
    header = b"\x00" + b"\xff" * 10 + b"\x00" + lba_to_msf(lba)[1:] + b"\x01"
    return header + user_data + bytes(RAW_SECTOR - 16 - CD_SECTOR)


_COMMANDS = {
    0x00: (CdromDrive._test_unit_ready, CHECK_READY),
    0x03: (CdromDrive._request_sense, ALLOW_UA),
    0x12: (CdromDrive._inquiry, ALLOW_UA),
    0x15: (CdromDrive._mode_select, 0),
    0x1A: (CdromDrive._mode_sense, 0),
    0x1B: (CdromDrive._start_stop_unit, 0),
    0x1E: (CdromDrive._prevent_allow, 0),
    0x25: (CdromDrive._read_capacity, CHECK_READY),
    0x28: (CdromDrive._read, CHECK_READY),
    0x2B: (CdromDrive._seek, CHECK_READY),
    0x43: (CdromDrive._read_toc, CHECK_READY),
    0x46: (CdromDrive._get_configuration, ALLOW_UA),
    0x4A: (CdromDrive._event_status, ALLOW_UA),
    0x51: (CdromDrive._read_disc_information, CHECK_READY),
    0x55: (CdromDrive._mode_select, 0),
    0x5A: (CdromDrive._mode_sense, 0),
    0xA8: (CdromDrive._read, CHECK_READY),
    0xBB: (CdromDrive._set_speed, 0),
    0xBD: (CdromDrive._mechanism_status, 0),
    0xBE: (CdromDrive._read_cd, CHECK_READY),
}
