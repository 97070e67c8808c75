"""Capability sets (MS-RDPBCGR 2.2.7) and the Demand Active / Confirm Active PDUs (2.2.1.13): what the
server announces, and the summary of the client's answer that the session acts on."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from services.vrdp.pdu.share import (
    DEFAULT_SHARE_ID,
    PDUTYPE_CONFIRMACTIVEPDU,
    PDUTYPE_DEMANDACTIVEPDU,
    build_share_control,
    parse_share_control,
)
from services.vrdp.pdu.wire import Reader
from services.vrdp.tpkt import ProtocolError

CAPSTYPE_GENERAL = 1
CAPSTYPE_BITMAP = 2
CAPSTYPE_ORDER = 3
CAPSTYPE_BITMAPCACHE = 4
CAPSTYPE_CONTROL = 5
CAPSTYPE_ACTIVATION = 7
CAPSTYPE_POINTER = 8
CAPSTYPE_SHARE = 9
CAPSTYPE_COLORCACHE = 10
CAPSTYPE_SOUND = 12
CAPSTYPE_INPUT = 13
CAPSTYPE_FONT = 14
CAPSTYPE_BRUSH = 15
CAPSTYPE_GLYPHCACHE = 16
CAPSTYPE_OFFSCREENCACHE = 17
CAPSTYPE_BITMAPCACHE_HOSTSUPPORT = 18
CAPSTYPE_BITMAPCACHE_REV2 = 19
CAPSTYPE_VIRTUALCHANNEL = 20
CAPSTYPE_DRAWNINEGRIDCACHE = 21
CAPSTYPE_DRAWGDIPLUS = 22
CAPSTYPE_RAIL = 23
CAPSTYPE_WINDOW = 24
CAPSTYPE_COMPDESK = 25
CAPSTYPE_MULTIFRAGMENTUPDATE = 26
CAPSTYPE_LARGE_POINTER = 27
CAPSTYPE_SURFACE_COMMANDS = 28
CAPSTYPE_BITMAP_CODECS = 29
CAPSTYPE_FRAME_ACKNOWLEDGE = 30

# General capability extraFlags.
FASTPATH_OUTPUT_SUPPORTED = 0x0001
NO_BITMAP_COMPRESSION_HDR = 0x0400
LONG_CREDENTIALS_SUPPORTED = 0x0004
AUTORECONNECT_SUPPORTED = 0x0008
ENC_SALTED_CHECKSUM = 0x0010
OSMAJORTYPE_UNIX = 0x0008
OSMINORTYPE_NATIVE_XSERVER = 0x0007
OSMAJORTYPE_WINDOWS = 0x0001
OSMINORTYPE_WINDOWS_NT = 0x0003
TS_CAPS_PROTOCOLVERSION = 0x0200

# Order capability orderFlags.
NEGOTIATEORDERSUPPORT = 0x0002
ZEROBOUNDSDELTASSUPPORT = 0x0008
COLORINDEXSUPPORT = 0x0020
ORDERFLAGS_EX_CACHE_BITMAP_REV3_SUPPORT = 0x0002

# Input capability inputFlags.
INPUT_FLAG_SCANCODES = 0x0001
INPUT_FLAG_MOUSEX = 0x0004
INPUT_FLAG_FASTPATH_INPUT = 0x0008
INPUT_FLAG_UNICODE = 0x0010
INPUT_FLAG_FASTPATH_INPUT2 = 0x0020
INPUT_FLAG_UNUSED1 = 0x0040
INPUT_FLAG_MOUSE_RELATIVE = 0x0080
TS_INPUT_FLAG_MOUSE_HWHEEL = 0x0100
TS_INPUT_FLAG_QOE_TIMESTAMPS = 0x0200

VCCAPS_NO_COMPR = 0x0
VCCAPS_COMPR_SC = 0x1
VCCAPS_COMPR_CS_8K = 0x2

LARGE_POINTER_FLAG_96x96 = 0x1
LARGE_POINTER_FLAG_384x384 = 0x2

SURFCMDS_SET_SURFACE_BITS = 0x02
SURFCMDS_FRAME_MARKER = 0x10
SURFCMDS_STREAM_SURFACE_BITS = 0x40

FONTSUPPORT_FONTLIST = 0x0001

CODEC_GUID_NSCODEC = uuid.UUID("CA8D1BB9-000F-154F-589F-AE2D1A87E2D6")
CODEC_GUID_REMOTEFX = uuid.UUID("76772F12-BD72-4463-AFB3-B73C9C6F7886")
CODEC_GUID_IMAGE_REMOTEFX = uuid.UUID("2744CCD4-9D8A-4E74-803C-0ECBEEA19C54")
CODEC_GUID_JPEG = uuid.UUID("1BAF4CE6-9EED-430C-869A-CB8B37B66237")

SOURCE_DESCRIPTOR = b"RDP\0"
SERVER_CHANNEL_ID = 0x03EA
CAPABILITY_HEADER_SIZE = 4

DEFAULT_EXTRA_FLAGS = (FASTPATH_OUTPUT_SUPPORTED | NO_BITMAP_COMPRESSION_HDR | LONG_CREDENTIALS_SUPPORTED
                       | AUTORECONNECT_SUPPORTED)
DEFAULT_INPUT_FLAGS = (INPUT_FLAG_SCANCODES | INPUT_FLAG_MOUSEX | INPUT_FLAG_FASTPATH_INPUT
                       | INPUT_FLAG_UNICODE | INPUT_FLAG_FASTPATH_INPUT2)


@dataclass(frozen=True)
class CapabilitySet:
    cap_type: int
    body: bytes  # without the 4-byte header

    def to_bytes(self) -> bytes:
        return struct.pack("<HH", self.cap_type, CAPABILITY_HEADER_SIZE + len(self.body)) + self.body


# --- server capability sets ------------------------------------------------------------------------

def general_capability(extra_flags: int = DEFAULT_EXTRA_FLAGS, refresh_rect: bool = True,
                       suppress_output: bool = True) -> CapabilitySet:
    # rdesktop falls back to RDP4 behaviour when extraFlags is 0; FreeRDP only sends Refresh Rect and
    # Suppress Output when the two support bytes are set.
    if not extra_flags:
        raise ValueError("general capability extraFlags must not be 0 (rdesktop drops to RDP4)")
    return CapabilitySet(CAPSTYPE_GENERAL, struct.pack(
        "<HHHHHHHHHBB", OSMAJORTYPE_WINDOWS, OSMINORTYPE_WINDOWS_NT, TS_CAPS_PROTOCOLVERSION, 0, 0,
        extra_flags, 0, 0, 0, int(refresh_rect), int(suppress_output)))


def bitmap_capability(bpp: int, width: int, height: int, desktop_resize: bool = True) -> CapabilitySet:
    # drawingFlags stay 0: FreeRDP notes Microsoft's ALLOW_SUBSAMPLING colour handling is inconsistent.
    return CapabilitySet(CAPSTYPE_BITMAP, struct.pack(
        "<HHHHHHHHHBBHH", bpp, 1, 1, 1, width, height, 0, int(desktop_resize), 1, 0, 0, 1, 0))


def order_capability() -> CapabilitySet:
    """No drawing orders: all 32 orderSupport bytes are 0, so strict clients expect none."""
    return CapabilitySet(CAPSTYPE_ORDER, bytes(16) + struct.pack(
        "<IHHHHHH", 0, 1, 20, 0, 1, 0, NEGOTIATEORDERSUPPORT | ZEROBOUNDSDELTASSUPPORT)
        + bytes(32) + struct.pack("<HHIIHHHH", 0, 0, 0, 0, 0, 0, 0, 0))


def pointer_capability(cache_size: int = 25) -> CapabilitySet:
    return CapabilitySet(CAPSTYPE_POINTER, struct.pack("<HHH", 1, cache_size, cache_size))


def input_capability(flags: int = DEFAULT_INPUT_FLAGS) -> CapabilitySet:
    # 88 bytes in all: FreeRDP rejects an Input capability body shorter than 84 bytes.
    return CapabilitySet(CAPSTYPE_INPUT, struct.pack("<HHIIII", flags, 0, 0, 0, 0, 0) + bytes(64))


def virtual_channel_capability(flags: int = VCCAPS_NO_COMPR, chunk_size: int = 1600) -> CapabilitySet:
    return CapabilitySet(CAPSTYPE_VIRTUALCHANNEL, struct.pack("<II", flags, chunk_size))


def share_capability(node_id: int = SERVER_CHANNEL_ID) -> CapabilitySet:
    return CapabilitySet(CAPSTYPE_SHARE, struct.pack("<HH", node_id, 0))


def font_capability() -> CapabilitySet:
    return CapabilitySet(CAPSTYPE_FONT, struct.pack("<HH", FONTSUPPORT_FONTLIST, 0))


def color_cache_capability(size: int = 6) -> CapabilitySet:
    return CapabilitySet(CAPSTYPE_COLORCACHE, struct.pack("<HH", size, 0))


def bitmap_cache_host_support_capability() -> CapabilitySet:
    # cacheVersion 1 = BITMAPCACHE_REV2: the server accepts a Persistent Key List.
    return CapabilitySet(CAPSTYPE_BITMAPCACHE_HOSTSUPPORT, struct.pack("<BBH", 1, 0, 0))


def multifragment_update_capability(max_request_size: int) -> CapabilitySet:
    return CapabilitySet(CAPSTYPE_MULTIFRAGMENTUPDATE, struct.pack("<I", max_request_size))


def large_pointer_capability(flags: int = LARGE_POINTER_FLAG_96x96) -> CapabilitySet:
    return CapabilitySet(CAPSTYPE_LARGE_POINTER, struct.pack("<H", flags))


def surface_commands_capability(cmd_flags: int = SURFCMDS_SET_SURFACE_BITS | SURFCMDS_FRAME_MARKER
                                | SURFCMDS_STREAM_SURFACE_BITS) -> CapabilitySet:
    return CapabilitySet(CAPSTYPE_SURFACE_COMMANDS, struct.pack("<II", cmd_flags, 0))


def frame_acknowledge_capability(max_unacknowledged: int = 2) -> CapabilitySet:
    return CapabilitySet(CAPSTYPE_FRAME_ACKNOWLEDGE, struct.pack("<I", max_unacknowledged))


def server_capabilities(bpp: int, width: int, height: int, *, extra_flags: int = DEFAULT_EXTRA_FLAGS,
                        input_flags: int = DEFAULT_INPUT_FLAGS, pointer_cache_size: int = 25,
                        multifragment_max: int = 0x3FFFFF, large_pointer: int = 0,
                        surface_commands: int = 0, frame_acknowledge: int = 0,
                        bitmap_cache_host: bool = False) -> list[CapabilitySet]:
    """The sets VRDP announces, in FreeRDP server order (known to work with mstsc, FreeRDP and
    rdesktop); optional ones are left out when 0, and only Microsoft-defined types are used because
    aardwolf and ChromeRDP reject anything else."""
    sets = [general_capability(extra_flags), bitmap_capability(bpp, width, height), order_capability(),
            pointer_capability(pointer_cache_size), input_capability(input_flags),
            virtual_channel_capability(), share_capability(), font_capability(), color_cache_capability()]
    if bitmap_cache_host:
        sets.append(bitmap_cache_host_support_capability())
    if multifragment_max:
        sets.append(multifragment_update_capability(multifragment_max))
    if large_pointer:
        sets.append(large_pointer_capability(large_pointer))
    if surface_commands:
        sets.append(surface_commands_capability(surface_commands))
    if frame_acknowledge:
        sets.append(frame_acknowledge_capability(frame_acknowledge))
    return sets


# --- Demand Active / Confirm Active ----------------------------------------------------------------

@dataclass(frozen=True)
class DemandActive:
    share_id: int
    pdu_source: int
    source_descriptor: bytes
    capability_sets: list[CapabilitySet]
    session_id: int


@dataclass(frozen=True)
class ConfirmActive:
    share_id: int
    pdu_source: int
    originator_id: int
    source_descriptor: bytes
    capability_sets: list[CapabilitySet]


def _combined(sets: list[CapabilitySet]) -> bytes:
    return struct.pack("<HH", len(sets), 0) + b"".join(s.to_bytes() for s in sets)


def build_demand_active(sets: list[CapabilitySet], share_id: int = DEFAULT_SHARE_ID,
                        pdu_source: int = SERVER_CHANNEL_ID, session_id: int = 0,
                        source_descriptor: bytes = SOURCE_DESCRIPTOR) -> bytes:
    combined = _combined(sets)
    body = (struct.pack("<IHH", share_id, len(source_descriptor), len(combined)) + source_descriptor
            + combined + struct.pack("<I", session_id))
    return build_share_control(PDUTYPE_DEMANDACTIVEPDU, pdu_source, body)


def build_confirm_active(sets: list[CapabilitySet], share_id: int = DEFAULT_SHARE_ID,
                         pdu_source: int = 1007, source_descriptor: bytes = b"MSTSC\0") -> bytes:
    combined = _combined(sets)
    body = (struct.pack("<IHHH", share_id, SERVER_CHANNEL_ID, len(source_descriptor), len(combined))
            + source_descriptor + combined)
    return build_share_control(PDUTYPE_CONFIRMACTIVEPDU, pdu_source, body)


def _read_capability_sets(reader: Reader) -> list[CapabilitySet]:
    count = reader.u16()
    reader.skip(2)
    sets = []
    # Like FreeRDP: fewer sets than announced is tolerated, a set running past the PDU is not.
    while count and reader.remaining >= CAPABILITY_HEADER_SIZE:
        cap_type, length = reader.u16(), reader.u16()
        if length < CAPABILITY_HEADER_SIZE:
            raise ProtocolError(f"capability set {cap_type} length {length} shorter than its header")
        sets.append(CapabilitySet(cap_type, reader.take(length - CAPABILITY_HEADER_SIZE)))
        count -= 1
    return sets


def parse_demand_active(data: bytes) -> DemandActive:
    control = parse_share_control(data)
    if control.pdu_type != PDUTYPE_DEMANDACTIVEPDU:
        raise ProtocolError(f"share control PDU type {control.pdu_type} is not Demand Active")
    reader = Reader(control.body, "Demand Active PDU")
    share_id, source_length, combined_length = reader.u32(), reader.u16(), reader.u16()
    source = reader.take(source_length)
    caps = Reader(reader.take(combined_length), "capability sets")
    sets = _read_capability_sets(caps)
    session_id = reader.u32() if reader.remaining >= 4 else 0
    return DemandActive(share_id, control.pdu_source, source, sets, session_id)


def parse_confirm_active(data: bytes) -> ConfirmActive:
    control = parse_share_control(data)
    if control.pdu_type != PDUTYPE_CONFIRMACTIVEPDU:
        raise ProtocolError(f"share control PDU type {control.pdu_type} is not Confirm Active")
    reader = Reader(control.body, "Confirm Active PDU")
    share_id, originator, source_length, _combined_length = (reader.u32(), reader.u16(), reader.u16(),
                                                             reader.u16())
    source = reader.take(source_length)
    # lengthCombinedCapabilities is not trusted (FreeRDP reads to the end of the PDU as well).
    sets = _read_capability_sets(reader)
    return ConfirmActive(share_id, control.pdu_source, originator, source, sets)


# --- what the server keeps from the client's sets ---------------------------------------------------

@dataclass(frozen=True)
class BitmapCodec:
    guid: uuid.UUID
    codec_id: int      # client-assigned; goes into TS_BITMAP_DATA_EX.codecID
    properties: bytes


@dataclass(frozen=True)
class ClientCapabilities:
    """Fields of the Confirm Active a server acts on; None marks a set (or field) the client omitted."""
    os_major: int = 0
    extra_flags: int = 0
    refresh_rect: bool = False
    suppress_output: bool = False
    bpp: int | None = None
    desktop_width: int | None = None
    desktop_height: int | None = None
    desktop_resize: bool = False
    bitmap_compression: bool = True
    drawing_flags: int = 0
    order_flags: int = 0
    order_support: bytes = bytes(32)
    color_pointer: bool = False
    color_pointer_cache_size: int = 0
    pointer_cache_size: int | None = None
    input_flags: int = 0
    keyboard_layout: int = 0
    keyboard_type: int = 0
    keyboard_subtype: int = 0
    keyboard_function_keys: int = 0
    vc_flags: int = 0
    vc_chunk_size: int | None = None
    multifragment_max: int | None = None
    large_pointer_flags: int = 0
    surface_command_flags: int = 0
    frame_acknowledge: int | None = None
    bitmap_codecs: tuple[BitmapCodec, ...] = ()
    set_types: tuple[int, ...] = field(default=())

    @property
    def fastpath_output(self) -> bool:
        return bool(self.extra_flags & FASTPATH_OUTPUT_SUPPORTED)

    @property
    def no_bitmap_compression_header(self) -> bool:
        return bool(self.extra_flags & NO_BITMAP_COMPRESSION_HDR)

    @property
    def salted_checksum(self) -> bool:
        return bool(self.extra_flags & ENC_SALTED_CHECKSUM)

    @property
    def fastpath_input(self) -> bool:
        return bool(self.input_flags & (INPUT_FLAG_FASTPATH_INPUT | INPUT_FLAG_FASTPATH_INPUT2))


def _fields(body: bytes, fmt: str) -> tuple | None:
    """The fields of a fixed layout, or None if the client's set is shorter (older clients send
    shorter versions of several sets; what is missing falls back to the default)."""
    size = struct.calcsize(fmt)
    if len(body) < size:
        return None
    return struct.unpack_from(fmt, body)


def _bitmap_codecs(body: bytes) -> tuple[BitmapCodec, ...]:
    reader = Reader(body, "bitmap codecs capability")
    codecs = []
    for _ in range(reader.u8()):
        guid = uuid.UUID(bytes_le=reader.take(16))
        codec_id = reader.u8()
        codecs.append(BitmapCodec(guid, codec_id, reader.take(reader.u16())))
    return tuple(codecs)


def client_capabilities(sets: list[CapabilitySet]) -> ClientCapabilities:
    values: dict = {"set_types": tuple(s.cap_type for s in sets)}
    for cap in sets:
        body = cap.body
        if cap.cap_type == CAPSTYPE_GENERAL:
            if (f := _fields(body, "<HHHHHHHHH")) is not None:
                values.update(os_major=f[0], extra_flags=f[5])
            if (f := _fields(body, "<18xBB")) is not None:
                values.update(refresh_rect=bool(f[0]), suppress_output=bool(f[1]))
        elif cap.cap_type == CAPSTYPE_BITMAP:
            if (f := _fields(body, "<HHHHHHHHHBB")) is not None:
                values.update(bpp=f[0], desktop_width=f[4], desktop_height=f[5],
                              desktop_resize=bool(f[7]), bitmap_compression=bool(f[8]), drawing_flags=f[10])
        elif cap.cap_type == CAPSTYPE_ORDER:
            if (f := _fields(body, "<16xIHHHHHH32s")) is not None:
                values.update(order_flags=f[6], order_support=f[7])
        elif cap.cap_type == CAPSTYPE_POINTER:
            if (f := _fields(body, "<HH")) is not None:
                values.update(color_pointer=bool(f[0]), color_pointer_cache_size=f[1])
            if (f := _fields(body, "<4xH")) is not None:
                values.update(pointer_cache_size=f[0])
        elif cap.cap_type == CAPSTYPE_INPUT:
            if (f := _fields(body, "<H2xI")) is not None:
                values.update(input_flags=f[0], keyboard_layout=f[1])
            if (f := _fields(body, "<8xIII")) is not None:
                values.update(keyboard_type=f[0], keyboard_subtype=f[1], keyboard_function_keys=f[2])
        elif cap.cap_type == CAPSTYPE_VIRTUALCHANNEL:
            if (f := _fields(body, "<I")) is not None:
                values.update(vc_flags=f[0])
            if (f := _fields(body, "<4xI")) is not None:
                values.update(vc_chunk_size=f[0])
        elif cap.cap_type == CAPSTYPE_MULTIFRAGMENTUPDATE:
            if (f := _fields(body, "<I")) is not None:
                values.update(multifragment_max=f[0])
        elif cap.cap_type == CAPSTYPE_LARGE_POINTER:
            if (f := _fields(body, "<H")) is not None:
                values.update(large_pointer_flags=f[0])
        elif cap.cap_type == CAPSTYPE_SURFACE_COMMANDS:
            if (f := _fields(body, "<I")) is not None:
                values.update(surface_command_flags=f[0])
        elif cap.cap_type == CAPSTYPE_FRAME_ACKNOWLEDGE:
            if (f := _fields(body, "<I")) is not None:
                values.update(frame_acknowledge=f[0])
        elif cap.cap_type == CAPSTYPE_BITMAP_CODECS:
            values.update(bitmap_codecs=_bitmap_codecs(body))
    return ClientCapabilities(**values)
