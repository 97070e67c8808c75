"""Client Info PDU (MS-RDPBCGR 2.2.1.11: credentials, shell, client address, time zone, auto-reconnect
cookie) and the licensing "valid client" message that ends the licensing phase (2.2.1.12)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vrdp.pdu.wire import Reader, decode_utf16, utf16z
from services.vrdp.tpkt import ProtocolError

INFO_MOUSE = 0x00000001
INFO_DISABLECTRLALTDEL = 0x00000002
INFO_AUTOLOGON = 0x00000008
INFO_UNICODE = 0x00000010
INFO_MAXIMIZESHELL = 0x00000020
INFO_LOGONNOTIFY = 0x00000040
INFO_COMPRESSION = 0x00000080
INFO_ENABLEWINDOWSKEY = 0x00000100
INFO_REMOTECONSOLEAUDIO = 0x00002000
INFO_FORCE_ENCRYPTED_CS_PDU = 0x00004000
INFO_RAIL = 0x00008000
INFO_LOGONERRORS = 0x00010000
INFO_MOUSE_HAS_WHEEL = 0x00020000
INFO_PASSWORD_IS_SC_PIN = 0x00040000
INFO_NOAUDIOPLAYBACK = 0x00080000
INFO_USING_SAVED_CREDS = 0x00100000
INFO_AUDIOCAPTURE = 0x00200000
INFO_VIDEO_DISABLE = 0x00400000
INFO_HIDEF_RAIL_SUPPORTED = 0x02000000
COMPRESSION_TYPE_MASK = 0x00001E00
COMPRESSION_TYPE_SHIFT = 9

AF_INET = 0x0002
AF_INET6 = 0x0017

PERF_DISABLE_WALLPAPER = 0x00000001
PERF_DISABLE_FULLWINDOWDRAG = 0x00000002
PERF_DISABLE_MENUANIMATIONS = 0x00000004
PERF_DISABLE_THEMING = 0x00000008
PERF_DISABLE_CURSOR_SHADOW = 0x00000020
PERF_DISABLE_CURSORSETTINGS = 0x00000040
PERF_ENABLE_FONT_SMOOTHING = 0x00000080
PERF_ENABLE_DESKTOP_COMPOSITION = 0x00000100

# RDP 4 clients are limited to these byte counts; RDP 5+ to 512 for every string (FreeRDP info.c).
RDP4_LIMITS = (52, 44, 32, 512, 512)
RDP5_LIMIT = 512
TIME_ZONE_SIZE = 172
AUTORECONNECT_COOKIE_SIZE = 28

# Licensing (2.2.1.12.1): an ERROR_ALERT carrying STATUS_VALID_CLIENT tells the client no licence
# will be issued and licensing is over. wMsgSize counts preamble + message = 16 (Windows, FreeRDP,
# xrdp and IronRDP all send 0x0010).
LICENSE_ERROR_ALERT = 0xFF
LICENSE_PREAMBLE_VERSION_3_0 = 0x03
STATUS_VALID_CLIENT = 0x00000007
ST_NO_TRANSITION = 0x00000002
BB_ERROR_BLOB = 0x0004
SEC_LICENSE_PKT = 0x0080


@dataclass(frozen=True)
class TimeZoneInfo:
    bias: int
    standard_name: str
    standard_date: bytes     # SYSTEMTIME, 16 bytes, kept raw: only a guest agent would use it
    standard_bias: int
    daylight_name: str
    daylight_date: bytes
    daylight_bias: int


@dataclass(frozen=True)
class AutoReconnectCookie:
    version: int
    logon_id: int
    security_verifier: bytes  # 16 bytes: HMAC-MD5 of the client random under the ARC random bits


@dataclass(frozen=True)
class ExtendedInfo:
    """TS_EXTENDED_INFO_PACKET; every field from time_zone on is optional and None when absent."""
    address_family: int = AF_INET
    client_address: str = ""
    client_dir: str = ""
    time_zone: TimeZoneInfo | None = None
    session_id: int | None = None
    performance_flags: int | None = None
    autoreconnect_cookie: AutoReconnectCookie | None = None


@dataclass(frozen=True)
class ClientInfo:
    code_page: int = 0
    flags: int = INFO_MOUSE | INFO_UNICODE | INFO_LOGONNOTIFY | INFO_DISABLECTRLALTDEL
    domain: str = ""
    user_name: str = ""
    password: str = ""
    alternate_shell: str = ""
    working_dir: str = ""
    extended: ExtendedInfo | None = None

    @property
    def compression_type(self) -> int | None:
        """Bulk compressor the client accepts (0 8K, 1 64K, 2 RDP6, 3 RDP6.1), None without compression."""
        if not self.flags & INFO_COMPRESSION:
            return None
        return (self.flags & COMPRESSION_TYPE_MASK) >> COMPRESSION_TYPE_SHIFT


def _read_string(reader: Reader, size: int, unicode: bool, limit: int, name: str) -> str:
    # cbXxx excludes the terminator, which is always present (2 bytes Unicode, 1 byte ANSI).
    if size > limit:
        raise ProtocolError(f"Client Info {name} of {size} bytes exceeds {limit}")
    if unicode:
        if size % 2:
            raise ProtocolError(f"Client Info {name} has an odd Unicode length {size}")
        text = reader.take(size + 2)[:size].decode("utf-16-le", errors="replace")
    else:
        text = reader.take(size + 1)[:size].decode("cp1252", errors="replace")
    # A NUL inside the counted text would cut it short where C strings are used ("alice\0evil"
    # logging on as alice); NULs only at its end are padding.
    text = text.rstrip("\0")
    if "\0" in text:
        raise ProtocolError(f"Client Info {name} contains a NUL character")
    return text


def _read_counted_utf16(reader: Reader, limit: int, name: str) -> str:
    # Extended-info strings count their terminator; the Android client sends 0 for an empty one.
    size = reader.u16()
    if size > limit:
        raise ProtocolError(f"Client Info {name} of {size} bytes exceeds {limit}")
    return decode_utf16(reader.take(size))


def _read_time_zone(reader: Reader) -> TimeZoneInfo:
    raw = Reader(reader.take(TIME_ZONE_SIZE), "time zone")
    return TimeZoneInfo(raw.i32(), decode_utf16(raw.take(64)), raw.take(16), raw.i32(),
                        decode_utf16(raw.take(64)), raw.take(16), raw.i32())


def _read_extended(reader: Reader) -> ExtendedInfo:
    family = reader.u16()
    address = _read_counted_utf16(reader, 80, "clientAddress")
    client_dir = _read_counted_utf16(reader, 512, "clientDir")
    fields: dict = {}
    # The optional tail is cut anywhere by real clients (the MS-RDPBCGR 4.1.10 example stops after
    # performanceFlags, RDP 5.0 clients after clientDir): keep what is whole, ignore a torn field.
    try:
        if reader.remaining:
            fields["time_zone"] = _read_time_zone(reader)
        if reader.remaining:
            fields["session_id"] = reader.u32()
        if reader.remaining:
            fields["performance_flags"] = reader.u32()
        if reader.remaining:
            cookie_size = reader.u16()
            if cookie_size:
                cookie = Reader(reader.take(cookie_size), "auto-reconnect cookie")
                if cookie.u32() != AUTORECONNECT_COOKIE_SIZE:
                    raise ProtocolError("auto-reconnect cookie cbLen is not 28")
                fields["autoreconnect_cookie"] = AutoReconnectCookie(cookie.u32(), cookie.u32(),
                                                                     cookie.take(16))
        # reserved1/2, the dynamic DST key name and flag follow; a server has no use for them.
    except ProtocolError as error:
        if "truncated" not in str(error):
            raise
    return ExtendedInfo(family, address, client_dir, **fields)


def parse_client_info(data: bytes, rdp5: bool = True) -> ClientInfo:
    """TS_INFO_PACKET (the body after the security header). `rdp5` is False for RDP 4.0 clients
    (client core version 0x00080001), which use shorter limits and send no extended info."""
    reader = Reader(data, "Client Info PDU")
    code_page, flags = reader.u32(), reader.u32()
    sizes = [reader.u16() for _ in range(5)]
    unicode = bool(flags & INFO_UNICODE)
    limits = (RDP5_LIMIT,) * 5 if rdp5 else RDP4_LIMITS
    names = ("domain", "userName", "password", "alternateShell", "workingDir")
    strings = [_read_string(reader, size, unicode, limit, name)
               for size, limit, name in zip(sizes, limits, names)]
    extended = _read_extended(reader) if rdp5 and reader.remaining else None
    return ClientInfo(code_page, flags, *strings, extended=extended)


def _time_zone_bytes(tz: TimeZoneInfo) -> bytes:
    def name(text: str) -> bytes:
        encoded = text.encode("utf-16-le")[:62]
        return encoded + bytes(64 - len(encoded))
    return (struct.pack("<i", tz.bias) + name(tz.standard_name) + tz.standard_date.ljust(16, b"\0")[:16]
            + struct.pack("<i", tz.standard_bias) + name(tz.daylight_name)
            + tz.daylight_date.ljust(16, b"\0")[:16] + struct.pack("<i", tz.daylight_bias))


def build_client_info(info: ClientInfo) -> bytes:
    """The client's TS_INFO_PACKET, always Unicode; the server uses it in tests and for the proxy."""
    flags = info.flags | INFO_UNICODE
    strings = [info.domain, info.user_name, info.password, info.alternate_shell, info.working_dir]
    encoded = [s.encode("utf-16-le") for s in strings]
    out = struct.pack("<II5H", info.code_page, flags, *(len(e) for e in encoded))
    out += b"".join(e + b"\0\0" for e in encoded)
    ext = info.extended
    if ext is None:
        return out
    address, client_dir = utf16z(ext.client_address), utf16z(ext.client_dir)
    out += struct.pack("<HH", ext.address_family, len(address)) + address
    out += struct.pack("<H", len(client_dir)) + client_dir
    # Optional fields stop at the first absent one: a later field cannot be sent without the earlier.
    if ext.time_zone is None:
        return out
    out += _time_zone_bytes(ext.time_zone)
    if ext.session_id is None:
        return out
    out += struct.pack("<I", ext.session_id)
    if ext.performance_flags is None:
        return out
    out += struct.pack("<I", ext.performance_flags)
    cookie = ext.autoreconnect_cookie
    if cookie is None:
        return out
    return out + struct.pack("<HIII", AUTORECONNECT_COOKIE_SIZE, AUTORECONNECT_COOKIE_SIZE, cookie.version,
                             cookie.logon_id) + cookie.security_verifier.ljust(16, b"\0")[:16]


def build_license_valid_client() -> bytes:
    """The whole 20-byte licensing PDU payload: basic security header (SEC_LICENSE_PKT, never
    encrypted) + LICENSE_VALID_CLIENT_DATA. aardwolf requires the first two bytes to be 80 00."""
    message = struct.pack("<IIHH", STATUS_VALID_CLIENT, ST_NO_TRANSITION, BB_ERROR_BLOB, 0)
    preamble = struct.pack("<BBH", LICENSE_ERROR_ALERT, LICENSE_PREAMBLE_VERSION_3_0, 4 + len(message))
    return struct.pack("<HH", SEC_LICENSE_PKT, 0) + preamble + message
