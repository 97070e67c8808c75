"""Connection finalization and session control Data PDUs (MS-RDPBCGR 2.2.1.14-2.2.1.22, 2.2.2-2.2.5,
2.2.11): Synchronize, Control, Font List/Map, Refresh Rect, Suppress Output, Shutdown, error and logon info."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vrdp.pdu import share
from services.vrdp.pdu.share import (
    DEFAULT_SHARE_ID,
    STREAM_LOW,
    STREAM_MED,
    ShareDataPdu,
    build_share_data,
)
from services.vrdp.pdu.wire import Reader
from services.vrdp.tpkt import ProtocolError

SYNCMSGTYPE_SYNC = 1

CTRLACTION_REQUEST_CONTROL = 1
CTRLACTION_GRANTED_CONTROL = 2
CTRLACTION_DETACH = 3
CTRLACTION_COOPERATE = 4

FONTLIST_FIRST = 0x0001
FONTLIST_LAST = 0x0002
FONTMAP_ENTRY_SIZE = 4

ALLOW_DISPLAY_UPDATES = 1
SUPPRESS_DISPLAY_UPDATES = 0

INFOTYPE_LOGON = 0
INFOTYPE_LOGON_LONG = 1
INFOTYPE_LOGON_PLAINNOTIFY = 2
INFOTYPE_LOGON_EXTENDED_INFO = 3
LOGON_EX_AUTORECONNECTCOOKIE = 0x1
LOGON_EX_LOGONERRORS = 0x2

TS_SYNC_SCROLL_LOCK = 0x1
TS_SYNC_NUM_LOCK = 0x2
TS_SYNC_CAPS_LOCK = 0x4
TS_SYNC_KANA_LOCK = 0x8

ERRINFO_NONE = 0x0000
ERRINFO_RPC_INITIATED_DISCONNECT = 0x0001
ERRINFO_IDLE_TIMEOUT = 0x0003
ERRINFO_DISCONNECTED_BY_OTHERCONNECTION = 0x0005
ERRINFO_SERVER_DENIED_CONNECTION = 0x0007
ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES = 0x0009
ERRINFO_LOGOFF_BY_USER = 0x000C
ERRINFO_BAD_CAPABILITIES = 0x10DD  # one of the 0x10xx protocol error codes, used for a bad Confirm Active

SERVER_CHANNEL_ID = 0x03EA


@dataclass(frozen=True)
class Synchronize:
    message_type: int
    target_user: int


@dataclass(frozen=True)
class Control:
    action: int
    grant_id: int
    control_id: int


@dataclass(frozen=True)
class FontList:
    number_entries: int
    total_entries: int
    list_flags: int
    entry_size: int


@dataclass(frozen=True)
class Rect:
    """Inclusive rectangle, as in TS_RECTANGLE16."""
    left: int
    top: int
    right: int
    bottom: int


@dataclass(frozen=True)
class RefreshRect:
    areas: tuple[Rect, ...]


@dataclass(frozen=True)
class SuppressOutput:
    allow_display_updates: bool
    area: Rect | None


@dataclass(frozen=True)
class ShutdownRequest:
    pass


@dataclass(frozen=True)
class PersistentKeyList:
    payload: bytes  # only acknowledged: VRDP keeps no persistent bitmap cache


@dataclass(frozen=True)
class FrameAcknowledge:
    frame_id: int


@dataclass(frozen=True)
class UnknownData:
    pdu_type2: int
    payload: bytes


# --- parsers for the client's Data PDUs ------------------------------------------------------------

def parse_synchronize(payload: bytes) -> Synchronize:
    reader = Reader(payload, "Synchronize PDU")
    return Synchronize(reader.u16(), reader.u16())


def parse_control(payload: bytes) -> Control:
    reader = Reader(payload, "Control PDU")
    return Control(reader.u16(), reader.u16(), reader.u32())


def parse_font_list(payload: bytes) -> FontList:
    reader = Reader(payload, "Font List PDU")
    return FontList(reader.u16(), reader.u16(), reader.u16(), reader.u16())


def _read_rect(reader: Reader) -> Rect:
    return Rect(reader.u16(), reader.u16(), reader.u16(), reader.u16())


def parse_refresh_rect(payload: bytes) -> RefreshRect:
    reader = Reader(payload, "Refresh Rect PDU")
    count = reader.u8()
    reader.skip(3)
    return RefreshRect(tuple(_read_rect(reader) for _ in range(count)))


def parse_suppress_output(payload: bytes) -> SuppressOutput:
    reader = Reader(payload, "Suppress Output PDU")
    allow = reader.u8()
    reader.skip(3)
    # The rectangle is present only with ALLOW_DISPLAY_UPDATES; mstsc sends it, some clients do not.
    area = _read_rect(reader) if allow and reader.remaining >= 8 else None
    return SuppressOutput(bool(allow), area)


def parse_frame_acknowledge(payload: bytes) -> FrameAcknowledge:
    return FrameAcknowledge(Reader(payload, "Frame Acknowledge PDU").u32())


def parse_client_data(pdu: ShareDataPdu):
    """The typed content of a client Data PDU; input PDUs are left to services.vrdp.pdu.input, other
    types come back as UnknownData so the session can log and ignore them."""
    if pdu.compressed:
        raise ProtocolError("compressed client Data PDU, but the server never accepts compression")
    parsers = {
        share.PDUTYPE2_SYNCHRONIZE: parse_synchronize,
        share.PDUTYPE2_CONTROL: parse_control,
        share.PDUTYPE2_FONTLIST: parse_font_list,
        share.PDUTYPE2_REFRESH_RECT: parse_refresh_rect,
        share.PDUTYPE2_SUPPRESS_OUTPUT: parse_suppress_output,
        share.PDUTYPE2_SHUTDOWN_REQUEST: lambda payload: ShutdownRequest(),
        share.PDUTYPE2_BITMAPCACHE_PERSISTENT_LIST: PersistentKeyList,
        share.PDUTYPE2_FRAME_ACKNOWLEDGE_PDU: parse_frame_acknowledge,
    }
    parser = parsers.get(pdu.pdu_type2)
    if parser is None:
        return UnknownData(pdu.pdu_type2, pdu.payload)
    return parser(pdu.payload)


# --- builders for the server's PDUs ----------------------------------------------------------------
# Windows sends the server's finalization PDUs on STREAM_MED except Synchronize (MS-RDPBCGR 4.1.19-22).

def build_synchronize(target_user: int, share_id: int = DEFAULT_SHARE_ID,
                      pdu_source: int = SERVER_CHANNEL_ID, stream_id: int = STREAM_LOW) -> bytes:
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_SYNCHRONIZE,
                            struct.pack("<HH", SYNCMSGTYPE_SYNC, target_user), stream_id)


def build_control(action: int, grant_id: int = 0, control_id: int = 0, share_id: int = DEFAULT_SHARE_ID,
                  pdu_source: int = SERVER_CHANNEL_ID, stream_id: int = STREAM_MED) -> bytes:
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_CONTROL,
                            struct.pack("<HHI", action, grant_id, control_id), stream_id)


def build_cooperate(share_id: int = DEFAULT_SHARE_ID, pdu_source: int = SERVER_CHANNEL_ID) -> bytes:
    return build_control(CTRLACTION_COOPERATE, 0, 0, share_id, pdu_source)


def build_granted_control(user_id: int, share_id: int = DEFAULT_SHARE_ID,
                          pdu_source: int = SERVER_CHANNEL_ID) -> bytes:
    """grantId is the client's user channel, controlId the server channel (MS-RDPBCGR 4.1.21)."""
    return build_control(CTRLACTION_GRANTED_CONTROL, user_id, SERVER_CHANNEL_ID, share_id, pdu_source)


def build_font_list(share_id: int = DEFAULT_SHARE_ID, pdu_source: int = 1007) -> bytes:
    """The client's Font List as mstsc sends it; the server needs it only in tests."""
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_FONTLIST,
                            struct.pack("<HHHH", 0, 0, FONTLIST_FIRST | FONTLIST_LAST, 50))


def build_font_map(share_id: int = DEFAULT_SHARE_ID, pdu_source: int = SERVER_CHANNEL_ID) -> bytes:
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_FONTMAP,
                            struct.pack("<HHHH", 0, 0, FONTLIST_FIRST | FONTLIST_LAST, FONTMAP_ENTRY_SIZE),
                            STREAM_MED)


def build_shutdown_denied(share_id: int = DEFAULT_SHARE_ID, pdu_source: int = SERVER_CHANNEL_ID) -> bytes:
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_SHUTDOWN_DENIED, b"")


def build_set_error_info(error_info: int, share_id: int = DEFAULT_SHARE_ID) -> bytes:
    """Only for clients that set RNS_UD_CS_SUPPORT_ERRINFO_PDU; the spec wants pduSource 0 here."""
    return build_share_data(share_id, 0, share.PDUTYPE2_SET_ERROR_INFO_PDU, struct.pack("<I", error_info))


def build_set_keyboard_indicators(led_flags: int, share_id: int = DEFAULT_SHARE_ID,
                                  pdu_source: int = SERVER_CHANNEL_ID) -> bytes:
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_SET_KEYBOARD_INDICATORS,
                            struct.pack("<HH", 0, led_flags))


def build_save_session_info_plain_notify(share_id: int = DEFAULT_SHARE_ID,
                                         pdu_source: int = SERVER_CHANNEL_ID) -> bytes:
    """Logon notification without credentials: tells INFO_LOGONNOTIFY clients the session is up."""
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_SAVE_SESSION_INFO,
                            struct.pack("<I", INFOTYPE_LOGON_PLAINNOTIFY) + bytes(576))


def build_save_session_info_logon(domain: str, user_name: str, session_id: int,
                                  share_id: int = DEFAULT_SHARE_ID,
                                  pdu_source: int = SERVER_CHANNEL_ID) -> bytes:
    """TS_LOGON_INFO (version 1): the names the client shows for the session, fixed-size fields."""
    domain_bytes = domain.encode("utf-16-le")[:50] + b"\0\0"
    user_bytes = user_name.encode("utf-16-le")[:510] + b"\0\0"
    body = (struct.pack("<I", len(domain_bytes)) + domain_bytes.ljust(52, b"\0")
            + struct.pack("<I", len(user_bytes)) + user_bytes.ljust(512, b"\0") + struct.pack("<I", session_id))
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_SAVE_SESSION_INFO,
                            struct.pack("<I", INFOTYPE_LOGON) + body)


def build_save_session_info_autoreconnect(logon_id: int, arc_random_bits: bytes,
                                          share_id: int = DEFAULT_SHARE_ID,
                                          pdu_source: int = SERVER_CHANNEL_ID) -> bytes:
    """TS_LOGON_INFO_EXTENDED with the server auto-reconnect cookie (ARC_SC_PRIVATE_PACKET)."""
    if len(arc_random_bits) != 16:
        raise ValueError("ArcRandomBits is 16 bytes")
    cookie = struct.pack("<III", 28, 1, logon_id) + arc_random_bits
    fields = struct.pack("<I", len(cookie)) + cookie
    extended = struct.pack("<HI", 6 + len(fields), LOGON_EX_AUTORECONNECTCOOKIE) + fields + bytes(570)
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_SAVE_SESSION_INFO,
                            struct.pack("<I", INFOTYPE_LOGON_EXTENDED_INFO) + extended)


def build_deactivate_all(share_id: int = DEFAULT_SHARE_ID, pdu_source: int = SERVER_CHANNEL_ID) -> bytes:
    """Ends the share before a new Demand Active (desktop resize); sourceDescriptor is one 0 byte."""
    return share.build_share_control(share.PDUTYPE_DEACTIVATEALLPDU, pdu_source,
                                     struct.pack("<IH", share_id, 1) + b"\0")
