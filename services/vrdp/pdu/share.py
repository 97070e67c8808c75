"""Share Control and Share Data headers (MS-RDPBCGR 2.2.8.1.1.1): the envelope of every slow-path
PDU after the security header, with the PDU type constants used across the share layer."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vrdp.pdu.wire import Reader
from services.vrdp.tpkt import ProtocolError

TS_PROTOCOL_VERSION = 0x0010

# Share Control pduType, low 4 bits (2.2.8.1.1.1.1).
PDUTYPE_DEMANDACTIVEPDU = 0x1
PDUTYPE_CONFIRMACTIVEPDU = 0x3
PDUTYPE_DEACTIVATEALLPDU = 0x6
PDUTYPE_DATAPDU = 0x7
PDUTYPE_SERVER_REDIR_PKT = 0xA

# A totalLength of 0x8000 marks a T.128 FlowPDU, which the spec says to ignore.
FLOW_PDU_MARKER = 0x8000

# Share Data pduType2 (2.2.8.1.1.1.2).
PDUTYPE2_UPDATE = 0x02
PDUTYPE2_CONTROL = 0x14
PDUTYPE2_POINTER = 0x1B
PDUTYPE2_INPUT = 0x1C
PDUTYPE2_SYNCHRONIZE = 0x1F
PDUTYPE2_REFRESH_RECT = 0x21
PDUTYPE2_PLAY_SOUND = 0x22
PDUTYPE2_SUPPRESS_OUTPUT = 0x23
PDUTYPE2_SHUTDOWN_REQUEST = 0x24
PDUTYPE2_SHUTDOWN_DENIED = 0x25
PDUTYPE2_SAVE_SESSION_INFO = 0x26
PDUTYPE2_FONTLIST = 0x27
PDUTYPE2_FONTMAP = 0x28
PDUTYPE2_SET_KEYBOARD_INDICATORS = 0x29
PDUTYPE2_BITMAPCACHE_PERSISTENT_LIST = 0x2B
PDUTYPE2_BITMAPCACHE_ERROR_PDU = 0x2C
PDUTYPE2_SET_KEYBOARD_IME_STATUS = 0x2D
PDUTYPE2_OFFSCRCACHE_ERROR_PDU = 0x2E
PDUTYPE2_SET_ERROR_INFO_PDU = 0x2F
PDUTYPE2_DRAWNINEGRID_ERROR_PDU = 0x30
PDUTYPE2_DRAWGDIPLUS_ERROR_PDU = 0x31
PDUTYPE2_ARC_STATUS_PDU = 0x32
PDUTYPE2_STATUS_INFO_PDU = 0x36
PDUTYPE2_MONITOR_LAYOUT_PDU = 0x37
PDUTYPE2_FRAME_ACKNOWLEDGE_PDU = 0x38

STREAM_UNDEFINED = 0x0
STREAM_LOW = 0x1
STREAM_MED = 0x2
STREAM_HI = 0x4

# compressedType (2.2.8.1.1.1.2): bulk compressor type in the low nibble, flags above.
COMPRESSION_TYPE_MASK = 0x0F
PACKET_COMPRESSED = 0x20
PACKET_AT_FRONT = 0x40
PACKET_FLUSHED = 0x80

SHARE_CONTROL_HEADER_SIZE = 6
SHARE_DATA_HEADER_SIZE = 18  # including the share control header

# Windows' share id (MS-RDPBCGR 4.1 examples); any value works as long as every PDU echoes it.
DEFAULT_SHARE_ID = 0x000103EA


@dataclass(frozen=True)
class ShareControlPdu:
    pdu_type: int        # PDUTYPE_*, version bits stripped
    version: int         # TS_PROTOCOL_VERSION for every peer we know
    pdu_source: int
    body: bytes          # everything after the 6-byte header (empty for a FlowPDU)
    flow: bool = False   # a T.128 FlowPDU: ignore it


@dataclass(frozen=True)
class ShareDataPdu:
    share_id: int
    pdu_source: int
    stream_id: int
    uncompressed_length: int
    pdu_type2: int
    compressed_type: int
    compressed_length: int
    payload: bytes

    @property
    def compressed(self) -> bool:
        return bool(self.compressed_type & PACKET_COMPRESSED)


def build_share_control(pdu_type: int, pdu_source: int, body: bytes) -> bytes:
    total = SHARE_CONTROL_HEADER_SIZE + len(body)
    if total > 0xFFFF:
        raise ValueError(f"share control PDU of {total} bytes does not fit its 16-bit length")
    return struct.pack("<HHH", total, pdu_type | TS_PROTOCOL_VERSION, pdu_source) + body


def _read_share_control(reader: Reader) -> ShareControlPdu:
    start = reader.pos
    total = reader.u16()
    if total == FLOW_PDU_MARKER:
        # pduTypeFlow, flowIdentifier, flowNumber, pduSource: 8 bytes in all (T.128 FlowPDU).
        reader.skip(6)
        return ShareControlPdu(0, 0, 0, b"", flow=True)
    # Windows XP sends 4-byte headers without pduSource on Deactivate All (FreeRDP rdp.c).
    if total < 4:
        raise ProtocolError(f"share control totalLength {total} shorter than its header")
    pdu_type = reader.u16()
    reader.need(total - 4)
    pdu_source = reader.u16() if total >= SHARE_CONTROL_HEADER_SIZE else 0
    body = reader.take(total - (reader.pos - start))
    return ShareControlPdu(pdu_type & 0xF, pdu_type & 0xFFF0, pdu_source, body)


def parse_share_control(data: bytes) -> ShareControlPdu:
    """One share control PDU; bytes past totalLength are a protocol error (use split_share_control
    where a peer may pack several PDUs into one MCS payload)."""
    reader = Reader(data, "share control PDU")
    pdu = _read_share_control(reader)
    if reader.remaining:
        raise ProtocolError(f"{reader.remaining} bytes after share control PDU")
    return pdu


def split_share_control(data: bytes) -> list[ShareControlPdu]:
    """All share control PDUs concatenated in one slow-path payload (FreeRDP accepts such packing)."""
    reader = Reader(data, "share control PDU")
    pdus = []
    while reader.remaining:
        pdus.append(_read_share_control(reader))
    if not pdus:
        raise ProtocolError("empty slow-path payload")
    return pdus


def build_share_data(share_id: int, pdu_source: int, pdu_type2: int, payload: bytes,
                     stream_id: int = STREAM_LOW, compressed_type: int = 0,
                     compressed_length: int = 0) -> bytes:
    """A whole Data PDU: share control + share data headers + payload.

    uncompressedLength counts from pduType2 on (totalLength - 14), as in the MS-RDPBCGR 4.1/4.2
    examples and rdesktop; nobody checks it for uncompressed data."""
    header = struct.pack("<IBBHBBH", share_id, 0, stream_id, len(payload) + 4, pdu_type2,
                         compressed_type, compressed_length)
    return build_share_control(PDUTYPE_DATAPDU, pdu_source, header + payload)


def parse_share_data(control: ShareControlPdu) -> ShareDataPdu:
    """The Share Data header of a PDUTYPE_DATAPDU; a compressed payload is returned as is."""
    if control.flow or control.pdu_type != PDUTYPE_DATAPDU:
        raise ProtocolError(f"share control PDU type {control.pdu_type} is not a Data PDU")
    reader = Reader(control.body, "share data header")
    share_id, _pad, stream_id, uncompressed_length, pdu_type2, compressed_type, compressed_length = (
        reader.u32(), reader.u8(), reader.u8(), reader.u16(), reader.u8(), reader.u8(), reader.u16())
    return ShareDataPdu(share_id, control.pdu_source, stream_id, uncompressed_length, pdu_type2,
                        compressed_type, compressed_length, reader.rest())


def parse_data_pdu(data: bytes) -> ShareDataPdu:
    """Shortcut for one whole Data PDU."""
    return parse_share_data(parse_share_control(data))
