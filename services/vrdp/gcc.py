"""T.124 GCC Conference Create Request/Response and the RDP client/server data blocks they carry.

Requests parse tolerantly (any block order, truncated CS_CORE); responses use Windows' exact 21-byte header."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vrdp.mcs import IO_CHANNEL_ID, per_length
from services.vrdp.tpkt import ProtocolError

# T.124 ConnectData key: object identifier {itu-t(0) recommendation(0) t(20) t124(124) version(0) 1}
_T124_OID = bytes((0x00, 0x05, 0x00, 0x14, 0x7C, 0x00, 0x01))
_CLIENT_H221_KEY = b"Duca"
_SERVER_H221_KEY = b"McDn"
# Windows' Conference Create Response up to the user data length. 0x2A is a bogus connectPDU length
# nobody reads; the rest is result success, nodeID 1001+..., tag 1, one user data set with key "McDn".
CONFERENCE_CREATE_RESPONSE_HEADER = bytes.fromhex("000500147c00012a14760a01010001c0004d63446e")

# client block types
CS_CORE = 0xC001
CS_SECURITY = 0xC002
CS_NET = 0xC003
CS_CLUSTER = 0xC004
CS_MONITOR = 0xC005
CS_MCS_MSGCHANNEL = 0xC006
CS_MONITOR_EX = 0xC008
CS_MULTITRANSPORT = 0xC00A
# server block types
SC_CORE = 0x0C01
SC_SECURITY = 0x0C02
SC_NET = 0x0C03
SC_MCS_MSGCHANNEL = 0x0C04
SC_MULTITRANSPORT = 0x0C08

RDP_VERSION_4 = 0x00080001
RDP_VERSION_5_PLUS = 0x00080004
RDP_VERSION_10_0 = 0x00080005
RDP_VERSION_10_12 = 0x00080011

# colorDepth / postBeta2ColorDepth
RNS_UD_COLOR_4BPP = 0xCA00
RNS_UD_COLOR_8BPP = 0xCA01
RNS_UD_COLOR_16BPP_555 = 0xCA02
RNS_UD_COLOR_16BPP_565 = 0xCA03
RNS_UD_COLOR_24BPP = 0xCA04
RNS_UD_SAS_DEL = 0xAA03
# supportedColorDepths
RNS_UD_24BPP_SUPPORT = 0x0001
RNS_UD_16BPP_SUPPORT = 0x0002
RNS_UD_15BPP_SUPPORT = 0x0004
RNS_UD_32BPP_SUPPORT = 0x0008
# client earlyCapabilityFlags
RNS_UD_CS_SUPPORT_ERRINFO_PDU = 0x0001
RNS_UD_CS_WANT_32BPP_SESSION = 0x0002
RNS_UD_CS_SUPPORT_STATUSINFO_PDU = 0x0004
RNS_UD_CS_STRONG_ASYMMETRIC_KEYS = 0x0008
RNS_UD_CS_VALID_CONNECTION_TYPE = 0x0020
RNS_UD_CS_SUPPORT_MONITOR_LAYOUT_PDU = 0x0040
RNS_UD_CS_SUPPORT_NETCHAR_AUTODETECT = 0x0080
RNS_UD_CS_SUPPORT_DYNVC_GFX_PROTOCOL = 0x0100
RNS_UD_CS_SUPPORT_DYNAMIC_TIME_ZONE = 0x0200
RNS_UD_CS_SUPPORT_HEARTBEAT_PDU = 0x0400
RNS_UD_CS_SUPPORT_SKIP_CHANNELJOIN = 0x0800
# server earlyCapabilityFlags
RNS_UD_SC_EDGE_ACTIONS_SUPPORTED_V1 = 0x1
RNS_UD_SC_DYNAMIC_DST_SUPPORTED = 0x2
RNS_UD_SC_EDGE_ACTIONS_SUPPORTED_V2 = 0x4
RNS_UD_SC_SKIP_CHANNELJOIN_SUPPORTED = 0x8

# encryption methods and levels
ENCRYPTION_METHOD_NONE = 0x0
ENCRYPTION_METHOD_40BIT = 0x1
ENCRYPTION_METHOD_128BIT = 0x2
ENCRYPTION_METHOD_56BIT = 0x8
ENCRYPTION_METHOD_FIPS = 0x10
ENCRYPTION_LEVEL_NONE = 0
ENCRYPTION_LEVEL_LOW = 1
ENCRYPTION_LEVEL_CLIENT_COMPATIBLE = 2
ENCRYPTION_LEVEL_HIGH = 3
ENCRYPTION_LEVEL_FIPS = 4

# CHANNEL_DEF options
CHANNEL_OPTION_INITIALIZED = 0x80000000
CHANNEL_OPTION_ENCRYPT_RDP = 0x40000000
CHANNEL_OPTION_ENCRYPT_SC = 0x20000000
CHANNEL_OPTION_ENCRYPT_CS = 0x10000000
CHANNEL_OPTION_PRI_HIGH = 0x08000000
CHANNEL_OPTION_PRI_MED = 0x04000000
CHANNEL_OPTION_PRI_LOW = 0x02000000
CHANNEL_OPTION_COMPRESS_RDP = 0x00800000
CHANNEL_OPTION_COMPRESS = 0x00400000
CHANNEL_OPTION_SHOW_PROTOCOL = 0x00200000
CHANNEL_OPTION_REMOTE_CONTROL_PERSISTENT = 0x00100000

MAX_STATIC_CHANNELS = 31  # CHANNEL_MAX_COUNT; FreeRDP refuses more
MAX_MONITORS = 16
MONITOR_PRIMARY = 0x1

_CORE_FIXED_SIZE = 128  # version .. imeFileName: everything a RDP 4 client must send
_HIGH_COLOR_BPP = {0x04: 4, 0x08: 8, 0x0F: 15, 0x10: 16, 0x18: 24}
_LEGACY_COLOR_BPP = {RNS_UD_COLOR_4BPP: 4, RNS_UD_COLOR_8BPP: 8, RNS_UD_COLOR_16BPP_555: 15,
                     RNS_UD_COLOR_16BPP_565: 16, RNS_UD_COLOR_24BPP: 24}


def _utf16_field(raw: bytes) -> str:
    text = raw.decode("utf-16-le", errors="replace")
    return text.split("\0", 1)[0]


def _utf16_pack(text: str, size: int) -> bytes:
    # Always leave room for the terminating NUL, as clients truncate names to fit.
    encoded = text.encode("utf-16-le")[:size - 2]
    return encoded + bytes(size - len(encoded))


@dataclass(frozen=True)
class ClientCoreData:
    version: int = RDP_VERSION_5_PLUS
    desktop_width: int = 1024
    desktop_height: int = 768
    color_depth: int = RNS_UD_COLOR_8BPP
    sas_sequence: int = RNS_UD_SAS_DEL
    keyboard_layout: int = 0x409
    client_build: int = 0
    client_name: str = ""
    keyboard_type: int = 4
    keyboard_subtype: int = 0
    keyboard_function_keys: int = 12
    ime_file_name: str = ""
    # Optional tail: a field may be present only if every field before it is.
    post_beta2_color_depth: int | None = None
    client_product_id: int | None = None
    serial_number: int | None = None
    high_color_depth: int | None = None
    supported_color_depths: int | None = None
    early_capability_flags: int | None = None
    client_dig_product_id: str | None = None
    connection_type: int | None = None
    pad: int | None = None
    server_selected_protocol: int | None = None
    desktop_physical_width: int | None = None
    desktop_physical_height: int | None = None
    desktop_orientation: int | None = None
    desktop_scale_factor: int | None = None
    device_scale_factor: int | None = None

    @property
    def requested_bpp(self) -> int:
        """The colour depth the client asks for, by the precedence Windows applies."""
        flags = self.early_capability_flags or 0
        supported = self.supported_color_depths or 0
        if flags & RNS_UD_CS_WANT_32BPP_SESSION and supported & RNS_UD_32BPP_SUPPORT:
            return 32
        if self.high_color_depth in _HIGH_COLOR_BPP:
            return _HIGH_COLOR_BPP[self.high_color_depth]
        if self.post_beta2_color_depth in _LEGACY_COLOR_BPP:
            return _LEGACY_COLOR_BPP[self.post_beta2_color_depth]
        return _LEGACY_COLOR_BPP.get(self.color_depth, 8)


# (attribute, struct format) of CS_CORE's optional tail, in wire order
_CORE_OPTIONAL = (
    ("post_beta2_color_depth", "H"), ("client_product_id", "H"), ("serial_number", "I"),
    ("high_color_depth", "H"), ("supported_color_depths", "H"), ("early_capability_flags", "H"),
    ("client_dig_product_id", "64s"), ("connection_type", "B"), ("pad", "B"),
    ("server_selected_protocol", "I"), ("desktop_physical_width", "I"), ("desktop_physical_height", "I"),
    ("desktop_orientation", "H"), ("desktop_scale_factor", "I"), ("device_scale_factor", "I"),
)


@dataclass(frozen=True)
class ClientSecurityData:
    encryption_methods: int = 0
    ext_encryption_methods: int = 0


@dataclass(frozen=True)
class ChannelDef:
    name: str  # up to 7 ASCII characters
    options: int = 0


@dataclass(frozen=True)
class ClientNetworkData:
    channels: tuple[ChannelDef, ...] = ()


@dataclass(frozen=True)
class ClientClusterData:
    flags: int = 0
    redirected_session_id: int = 0


@dataclass(frozen=True)
class MonitorDef:
    left: int
    top: int
    right: int  # inclusive
    bottom: int  # inclusive
    flags: int = 0


@dataclass(frozen=True)
class ClientMonitorData:
    monitors: tuple[MonitorDef, ...] = ()
    flags: int = 0


@dataclass(frozen=True)
class ClientData:
    """All client data blocks of a Conference Create Request; blocks the server does not use are kept raw."""
    core: ClientCoreData
    security: ClientSecurityData | None = None
    network: ClientNetworkData | None = None
    cluster: ClientClusterData | None = None
    monitor: ClientMonitorData | None = None
    other_blocks: tuple[tuple[int, bytes], ...] = ()  # (type, body) e.g. CS_MONITOR_EX, CS_MCS_MSGCHANNEL

    @property
    def channels(self) -> tuple[ChannelDef, ...]:
        return self.network.channels if self.network else ()


@dataclass(frozen=True)
class ServerCoreData:
    version: int = RDP_VERSION_5_PLUS
    client_requested_protocols: int | None = 0  # None only when parsing a pre-RDP 5.1 server
    early_capability_flags: int | None = 0


@dataclass(frozen=True)
class ServerSecurityData:
    encryption_method: int = ENCRYPTION_METHOD_NONE
    encryption_level: int = ENCRYPTION_LEVEL_NONE
    server_random: bytes = b""  # 32 bytes unless method and level are both NONE
    server_certificate: bytes = b""  # proprietary or X.509 chain, built by the security layer


@dataclass(frozen=True)
class ServerNetworkData:
    channel_ids: tuple[int, ...] = ()
    io_channel_id: int = IO_CHANNEL_ID

    @classmethod
    def for_channels(cls, channels: tuple[ChannelDef, ...]) -> ServerNetworkData:
        # rdesktop never reads SC_NET and assumes 1004 + index; every client channel gets an id.
        return cls(tuple(IO_CHANNEL_ID + 1 + index for index in range(len(channels))))


@dataclass(frozen=True)
class ServerData:
    core: ServerCoreData
    network: ServerNetworkData
    security: ServerSecurityData
    other_blocks: tuple[tuple[int, bytes], ...] = ()  # (type, body), written after the three above


# ---------------------------------------------------------------- client blocks


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.position

    def take(self, count: int) -> bytes:
        if count < 0 or count > self.remaining:
            raise ProtocolError("GCC PDU truncated")
        value = self.data[self.position:self.position + count]
        self.position += count
        return value

    def byte(self) -> int:
        return self.take(1)[0]

    def per_length(self) -> int:
        first = self.byte()
        if first & 0x80 == 0:
            return first
        if first & 0x40:
            raise ProtocolError("PER fragmented length in GCC")
        return ((first & 0x3F) << 8) | self.byte()

    def expect(self, value: bytes, what: str) -> None:
        if self.take(len(value)) != value:
            raise ProtocolError(f"GCC {what} is not the one RDP uses")


def _blocks(data: bytes) -> list[tuple[int, bytes]]:
    blocks = []
    position = 0
    while position < len(data):
        if len(data) - position < 4:
            raise ProtocolError("data block header truncated")
        kind, length = struct.unpack_from("<HH", data, position)
        if length < 4 or position + length > len(data):
            raise ProtocolError(f"data block 0x{kind:04X} length {length} does not fit")
        blocks.append((kind, bytes(data[position + 4:position + length])))
        position += length
    return blocks


def _block(kind: int, body: bytes) -> bytes:
    if len(body) + 4 > 0xFFFF:
        raise ValueError(f"data block 0x{kind:04X} too long")
    return struct.pack("<HH", kind, len(body) + 4) + body


def parse_client_core(body: bytes) -> ClientCoreData:
    if len(body) < _CORE_FIXED_SIZE:
        raise ProtocolError(f"CS_CORE of {len(body)} bytes lacks its mandatory fields")
    (version, width, height, color_depth, sas, layout, build, name, kb_type, kb_subtype, kb_fn,
     ime) = struct.unpack_from("<IHHHHII32sIII64s", body)
    optional = {}
    position = _CORE_FIXED_SIZE
    for attribute, fmt in _CORE_OPTIONAL:
        size = struct.calcsize("<" + fmt)
        if len(body) - position < size:
            break  # truncated here: this field and all later ones are absent
        (value,) = struct.unpack_from("<" + fmt, body, position)
        optional[attribute] = _utf16_field(value) if isinstance(value, bytes) else value
        position += size
    return ClientCoreData(version, width, height, color_depth, sas, layout, build, _utf16_field(name),
                          kb_type, kb_subtype, kb_fn, _utf16_field(ime), **optional)


def build_client_core(core: ClientCoreData) -> bytes:
    body = struct.pack("<IHHHHII32sIII64s", core.version, core.desktop_width, core.desktop_height,
                       core.color_depth, core.sas_sequence, core.keyboard_layout, core.client_build,
                       _utf16_pack(core.client_name, 32), core.keyboard_type, core.keyboard_subtype,
                       core.keyboard_function_keys, _utf16_pack(core.ime_file_name, 64))
    absent = None
    for attribute, fmt in _CORE_OPTIONAL:
        value = getattr(core, attribute)
        if value is None:
            absent = attribute
            continue
        if absent is not None:
            raise ValueError(f"CS_CORE {attribute} cannot follow the absent {absent}")
        if fmt == "64s":
            value = _utf16_pack(value, 64)
        body += struct.pack("<" + fmt, value)
    return _block(CS_CORE, body)


def parse_client_security(body: bytes) -> ClientSecurityData:
    if len(body) < 8:
        raise ProtocolError("CS_SECURITY truncated")
    return ClientSecurityData(*struct.unpack_from("<II", body))


def build_client_security(security: ClientSecurityData) -> bytes:
    return _block(CS_SECURITY, struct.pack("<II", security.encryption_methods, security.ext_encryption_methods))


def parse_client_network(body: bytes) -> ClientNetworkData:
    if len(body) < 4:
        raise ProtocolError("CS_NET truncated")
    (count,) = struct.unpack_from("<I", body)
    if count > MAX_STATIC_CHANNELS:
        raise ProtocolError(f"CS_NET announces {count} channels, more than {MAX_STATIC_CHANNELS}")
    if len(body) < 4 + 12 * count:
        raise ProtocolError(f"CS_NET too short for {count} channels")
    channels = []
    for index in range(count):
        name, options = struct.unpack_from("<8sI", body, 4 + 12 * index)
        channels.append(ChannelDef(name.split(b"\0", 1)[0].decode("latin-1"), options))
    return ClientNetworkData(tuple(channels))


def build_client_network(network: ClientNetworkData) -> bytes:
    body = struct.pack("<I", len(network.channels))
    for channel in network.channels:
        name = channel.name.encode("latin-1")
        if len(name) > 7:
            raise ValueError(f"channel name {channel.name!r} longer than 7 characters")
        body += struct.pack("<8sI", name, channel.options)
    return _block(CS_NET, body)


def parse_client_cluster(body: bytes) -> ClientClusterData:
    if len(body) < 8:
        raise ProtocolError("CS_CLUSTER truncated")
    return ClientClusterData(*struct.unpack_from("<II", body))


def build_client_cluster(cluster: ClientClusterData) -> bytes:
    return _block(CS_CLUSTER, struct.pack("<II", cluster.flags, cluster.redirected_session_id))


def parse_client_monitor(body: bytes) -> ClientMonitorData:
    if len(body) < 8:
        raise ProtocolError("CS_MONITOR truncated")
    flags, count = struct.unpack_from("<II", body)
    if count > MAX_MONITORS:
        raise ProtocolError(f"CS_MONITOR announces {count} monitors, more than {MAX_MONITORS}")
    if len(body) < 8 + 20 * count:
        raise ProtocolError(f"CS_MONITOR too short for {count} monitors")
    monitors = tuple(MonitorDef(*struct.unpack_from("<iiiiI", body, 8 + 20 * index)) for index in range(count))
    return ClientMonitorData(monitors, flags)


def build_client_monitor(monitor: ClientMonitorData) -> bytes:
    body = struct.pack("<II", monitor.flags, len(monitor.monitors))
    for m in monitor.monitors:
        body += struct.pack("<iiiiI", m.left, m.top, m.right, m.bottom, m.flags)
    return _block(CS_MONITOR, body)


_CLIENT_PARSERS = {CS_CORE: ("core", parse_client_core), CS_SECURITY: ("security", parse_client_security),
                   CS_NET: ("network", parse_client_network), CS_CLUSTER: ("cluster", parse_client_cluster),
                   CS_MONITOR: ("monitor", parse_client_monitor)}


def parse_client_data(data: bytes) -> ClientData:
    """Client data blocks, in whatever order the client wrote them."""
    parsed: dict[str, object] = {}
    other = []
    for kind, body in _blocks(data):
        if kind in _CLIENT_PARSERS:
            name, parser = _CLIENT_PARSERS[kind]
            if name in parsed:
                raise ProtocolError(f"client data block 0x{kind:04X} sent twice")
            parsed[name] = parser(body)
        else:
            other.append((kind, body))
    if "core" not in parsed:
        raise ProtocolError("Conference Create Request without CS_CORE")
    return ClientData(other_blocks=tuple(other), **parsed)


def build_client_data(client: ClientData) -> bytes:
    data = build_client_core(client.core)
    if client.cluster is not None:
        data += build_client_cluster(client.cluster)
    if client.security is not None:
        data += build_client_security(client.security)
    if client.network is not None:
        data += build_client_network(client.network)
    if client.monitor is not None:
        data += build_client_monitor(client.monitor)
    for kind, body in client.other_blocks:
        data += _block(kind, body)
    return data


def parse_conference_create_request(data: bytes) -> ClientData:
    """The MCS Connect-Initial user data: T.124 ConnectData wrapping ConnectGCCPDU conferenceCreateRequest."""
    reader = _Reader(data)
    reader.expect(_T124_OID, "ConnectData key")
    connect_pdu_length = reader.per_length()
    if connect_pdu_length > reader.remaining:
        raise ProtocolError("GCC connectPDU length overruns the user data")
    if reader.byte() != 0x00:
        raise ProtocolError("ConnectGCCPDU is not a conferenceCreateRequest")
    if reader.byte() != 0x08:
        # Only the userData optional field: every RDP client sends exactly this selection.
        raise ProtocolError("conferenceCreateRequest with optional fields RDP does not use")
    name_length = reader.per_length() + 1  # NumericString SIZE (1..MAX), four bits per digit
    reader.take((name_length + 1) // 2)
    reader.byte()  # lockedConference, listedConference, conductible bits and terminationMethod
    if reader.byte() < 1:
        raise ProtocolError("conferenceCreateRequest without user data sets")
    if reader.byte() != 0xC0:
        raise ProtocolError("GCC user data set is not an H.221 non-standard key with a value")
    key_length = reader.per_length() + 4  # H221NonStandardIdentifier is SIZE (4..255)
    if reader.take(key_length) != _CLIENT_H221_KEY:
        raise ProtocolError("GCC user data key is not the client's \"Duca\"")
    blocks = reader.take(reader.per_length())
    return parse_client_data(blocks)


def build_conference_create_request(client: ClientData) -> bytes:
    blocks = build_client_data(client)
    # conferenceName "1", terminationMethod automatic, one set: h221NonStandard "Duca".
    connect_pdu = bytes.fromhex("0008001000") + bytes((0x01, 0xC0, 0x00)) + _CLIENT_H221_KEY
    connect_pdu += per_length(len(blocks)) + blocks
    return _T124_OID + per_length(len(connect_pdu)) + connect_pdu


# ---------------------------------------------------------------- server blocks


def build_server_core(core: ServerCoreData) -> bytes:
    body = struct.pack("<I", core.version)
    if core.client_requested_protocols is not None:
        body += struct.pack("<I", core.client_requested_protocols)
        if core.early_capability_flags is not None:
            body += struct.pack("<I", core.early_capability_flags)
    return _block(SC_CORE, body)


def parse_server_core(body: bytes) -> ServerCoreData:
    if len(body) < 4:
        raise ProtocolError("SC_CORE truncated")
    (version,) = struct.unpack_from("<I", body)
    requested = struct.unpack_from("<I", body, 4)[0] if len(body) >= 8 else None
    early = struct.unpack_from("<I", body, 8)[0] if len(body) >= 12 else None
    return ServerCoreData(version, requested, early)


def build_server_security(security: ServerSecurityData) -> bytes:
    body = struct.pack("<II", security.encryption_method, security.encryption_level)
    if security.encryption_method or security.encryption_level:
        if len(security.server_random) != 32 or not security.server_certificate:
            raise ValueError("an encrypting SC_SECURITY needs a 32-byte server random and a certificate")
        body += struct.pack("<II", 32, len(security.server_certificate))
        body += security.server_random + security.server_certificate
    elif security.server_random or security.server_certificate:
        # FreeRDP rejects random or certificate when level and method are NONE.
        raise ValueError("SC_SECURITY without encryption carries no random or certificate")
    return _block(SC_SECURITY, body)


def parse_server_security(body: bytes) -> ServerSecurityData:
    reader = _Reader(body)
    method, level = struct.unpack("<II", reader.take(8))
    if not method and not level:
        return ServerSecurityData(method, level)
    random_length, certificate_length = struct.unpack("<II", reader.take(8))
    if random_length != 32:
        raise ProtocolError(f"server random of {random_length} bytes")
    random = bytes(reader.take(random_length))
    certificate = bytes(reader.take(certificate_length))
    return ServerSecurityData(method, level, random, certificate)


def build_server_network(network: ServerNetworkData) -> bytes:
    ids = network.channel_ids
    body = struct.pack("<HH", network.io_channel_id, len(ids)) + struct.pack(f"<{len(ids)}H", *ids)
    if len(ids) % 2:
        body += b"\0\0"  # pad to a multiple of 4 bytes
    return _block(SC_NET, body)


def parse_server_network(body: bytes) -> ServerNetworkData:
    reader = _Reader(body)
    io_channel, count = struct.unpack("<HH", reader.take(4))
    ids = struct.unpack(f"<{count}H", reader.take(2 * count))
    return ServerNetworkData(tuple(ids), io_channel)


def build_server_data(server: ServerData) -> bytes:
    # Core, network, security: the order FreeRDP's server writes and every client accepts.
    data = (build_server_core(server.core) + build_server_network(server.network)
            + build_server_security(server.security))
    for kind, body in server.other_blocks:
        data += _block(kind, body)
    return data


def parse_server_data(data: bytes) -> ServerData:
    core = network = security = None
    other = []
    for kind, body in _blocks(data):
        if kind == SC_CORE and core is None:
            core = parse_server_core(body)
        elif kind == SC_NET and network is None:
            network = parse_server_network(body)
        elif kind == SC_SECURITY and security is None:
            security = parse_server_security(body)
        elif kind in (SC_CORE, SC_NET, SC_SECURITY):
            raise ProtocolError(f"server data block 0x{kind:04X} sent twice")
        else:
            other.append((kind, body))
    if core is None or network is None or security is None:
        raise ProtocolError("Conference Create Response lacks SC_CORE, SC_NET or SC_SECURITY")
    return ServerData(core, network, security, tuple(other))


def build_conference_create_response(server: ServerData) -> bytes:
    blocks = build_server_data(server)
    if len(blocks) > 0x3FFF:
        raise ValueError("server data blocks exceed a 2-byte PER length")
    # Always the 2-byte length form, as Windows and xrdp write it.
    return CONFERENCE_CREATE_RESPONSE_HEADER + bytes((0x80 | (len(blocks) >> 8), len(blocks) & 0xFF)) + blocks


def parse_conference_create_response(data: bytes) -> ServerData:
    reader = _Reader(data)
    reader.expect(_T124_OID, "ConnectData key")
    # Clients skip the rest of the fixed header like rdesktop does; only the H.221 key is checked.
    header = reader.take(len(CONFERENCE_CREATE_RESPONSE_HEADER) - len(_T124_OID))
    if header[-4:] != _SERVER_H221_KEY:
        raise ProtocolError("GCC user data key is not the server's \"McDn\"")
    return parse_server_data(reader.take(reader.per_length()))
