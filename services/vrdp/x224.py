"""X.224 (ISO 8073 class 0) TPDUs as RDP uses them: Connection Request/Confirm with RDP negotiation, Data.

Functions take and return the TPDU (the TPKT payload); wrap_data/unwrap_data also do the TPKT layer."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vrdp.tpkt import ProtocolError, build_tpkt, parse_tpkt

TPDU_CONNECTION_REQUEST = 0xE0
TPDU_CONNECTION_CONFIRM = 0xD0
TPDU_DISCONNECT_REQUEST = 0x80
TPDU_DATA = 0xF0
TPDU_ERROR = 0x70

DATA_HEADER = bytes((0x02, TPDU_DATA, 0x80))  # LI=2, DT, EOT: RDP never splits a TPDU

# requestedProtocols / selectedProtocol
PROTOCOL_RDP = 0x00000000
PROTOCOL_SSL = 0x00000001
PROTOCOL_HYBRID = 0x00000002
PROTOCOL_RDSTLS = 0x00000004
PROTOCOL_HYBRID_EX = 0x00000008
PROTOCOL_RDSAAD = 0x00000010

TYPE_RDP_NEG_REQ = 0x01
TYPE_RDP_NEG_RSP = 0x02
TYPE_RDP_NEG_FAILURE = 0x03
TYPE_RDP_CORRELATION_INFO = 0x06

# RDP_NEG_REQ flags
RESTRICTED_ADMIN_MODE_REQUIRED = 0x01
REDIRECTED_AUTHENTICATION_MODE_REQUIRED = 0x02
CORRELATION_INFO_PRESENT = 0x08

# RDP_NEG_RSP flags
EXTENDED_CLIENT_DATA_SUPPORTED = 0x01
DYNVC_GFX_PROTOCOL_SUPPORTED = 0x02
NEGRSP_FLAG_RESERVED = 0x04
RESTRICTED_ADMIN_MODE_SUPPORTED = 0x08
REDIRECTED_AUTHENTICATION_MODE_SUPPORTED = 0x10

# RDP_NEG_FAILURE codes
SSL_REQUIRED_BY_SERVER = 1
SSL_NOT_ALLOWED_BY_SERVER = 2
SSL_CERT_NOT_ON_SERVER = 3
INCONSISTENT_FLAGS = 4
HYBRID_REQUIRED_BY_SERVER = 5
SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER = 6

_COOKIE_PREFIX = b"Cookie: mstshash="
_NEG_LENGTH = 8
_CORRELATION_LENGTH = 36
# Windows' Connection Confirm: dst-ref 0, src-ref 0x1234, class 0 (MS-RDPBCGR 4.1.2).
_CONFIRM_SOURCE_REFERENCE = 0x1234


@dataclass(frozen=True)
class NegotiationRequest:
    requested_protocols: int
    flags: int = 0
    correlation_id: bytes | None = None  # 16 bytes when CORRELATION_INFO_PRESENT


@dataclass(frozen=True)
class ConnectionRequest:
    cookie: str | None = None  # the user name after "Cookie: mstshash=" (often truncated by mstsc)
    routing_token: bytes | None = None  # any other "Cookie: ...\r\n" line, kept verbatim with its CRLF
    negotiation: NegotiationRequest | None = None  # None: an RDP 4/5 client (rdesktop -4, /sec:rdp)

    @property
    def requested_protocols(self) -> int:
        return self.negotiation.requested_protocols if self.negotiation else PROTOCOL_RDP


@dataclass(frozen=True)
class NegotiationResponse:
    selected_protocol: int
    flags: int = EXTENDED_CLIENT_DATA_SUPPORTED


@dataclass(frozen=True)
class NegotiationFailure:
    code: int


@dataclass(frozen=True)
class ConnectionConfirm:
    # None answers a request without RDP_NEG_REQ: the 11-byte confirm that means Standard RDP Security.
    result: NegotiationResponse | NegotiationFailure | None = None


def tpdu_code(tpdu: bytes) -> int:
    """The TPDU kind (high nibble of the code byte), e.g. TPDU_DATA."""
    if len(tpdu) < 2:
        raise ProtocolError("X.224 TPDU shorter than its fixed header")
    return tpdu[1] & 0xF0


def _fixed_header(tpdu: bytes, code: int, name: str) -> bytes:
    """The variable part after the 7-byte CR/CC fixed header, bounded by the length indicator."""
    if len(tpdu) < 7:
        raise ProtocolError(f"X.224 {name} shorter than 7 bytes")
    length_indicator = tpdu[0]
    if tpdu[1] & 0xF0 != code:
        raise ProtocolError(f"X.224 code 0x{tpdu[1]:02X} is not a {name}")
    if not 6 <= length_indicator <= len(tpdu) - 1:
        raise ProtocolError(f"X.224 {name} length indicator {length_indicator} does not fit {len(tpdu)} bytes")
    return tpdu[7:1 + length_indicator]


def parse_connection_request(tpdu: bytes) -> ConnectionRequest:
    variable = _fixed_header(tpdu, TPDU_CONNECTION_REQUEST, "Connection Request")
    cookie = routing_token = negotiation = None
    if variable.startswith(b"Cookie:"):
        end = variable.find(b"\r\n")
        if end < 0:
            raise ProtocolError("X.224 cookie without CRLF")
        line = variable[:end + 2]
        if line.startswith(_COOKIE_PREFIX):
            cookie = line[len(_COOKIE_PREFIX):-2].decode("latin-1")
        else:
            routing_token = bytes(line)
        variable = variable[end + 2:]
    if variable:
        negotiation, variable = _parse_negotiation_request(variable)
    if variable:
        raise ProtocolError(f"{len(variable)} unexpected bytes in X.224 Connection Request")
    return ConnectionRequest(cookie, routing_token, negotiation)


def _parse_negotiation_request(data: bytes) -> tuple[NegotiationRequest, bytes]:
    if len(data) < _NEG_LENGTH:
        raise ProtocolError("RDP_NEG_REQ truncated")
    kind, flags, length, protocols = struct.unpack_from("<BBHI", data)
    if kind != TYPE_RDP_NEG_REQ or length != _NEG_LENGTH:
        raise ProtocolError(f"expected RDP_NEG_REQ, got type {kind} length {length}")
    data = data[_NEG_LENGTH:]
    correlation_id = None
    if flags & CORRELATION_INFO_PRESENT:
        if len(data) < _CORRELATION_LENGTH:
            raise ProtocolError("RDP_NEG_CORRELATION_INFO truncated")
        kind, _, length = struct.unpack_from("<BBH", data)
        if kind != TYPE_RDP_CORRELATION_INFO or length != _CORRELATION_LENGTH:
            raise ProtocolError(f"expected RDP_NEG_CORRELATION_INFO, got type {kind} length {length}")
        correlation_id = bytes(data[4:20])
        data = data[_CORRELATION_LENGTH:]
    return NegotiationRequest(protocols, flags, correlation_id), data


def build_connection_request(request: ConnectionRequest) -> bytes:
    variable = b""
    if request.cookie is not None:
        variable += _COOKIE_PREFIX + request.cookie.encode("latin-1") + b"\r\n"
    elif request.routing_token is not None:
        variable += request.routing_token
    negotiation = request.negotiation
    if negotiation is not None:
        flags = negotiation.flags
        if negotiation.correlation_id is not None:
            flags |= CORRELATION_INFO_PRESENT
        variable += struct.pack("<BBHI", TYPE_RDP_NEG_REQ, flags, _NEG_LENGTH, negotiation.requested_protocols)
        if negotiation.correlation_id is not None:
            if len(negotiation.correlation_id) != 16:
                raise ValueError("correlation id is 16 bytes")
            variable += struct.pack("<BBH", TYPE_RDP_CORRELATION_INFO, 0, _CORRELATION_LENGTH)
            variable += negotiation.correlation_id + bytes(16)
    return _with_fixed_header(TPDU_CONNECTION_REQUEST, 0, variable)


def _with_fixed_header(code: int, source_reference: int, variable: bytes) -> bytes:
    length_indicator = 6 + len(variable)
    if length_indicator > 0xFE:
        raise ValueError("X.224 variable part longer than the length indicator allows")
    return struct.pack(">BBHHB", length_indicator, code, 0, source_reference, 0) + variable


def build_connection_confirm(confirm: ConnectionConfirm) -> bytes:
    result = confirm.result
    if result is None:
        variable = b""
    elif isinstance(result, NegotiationResponse):
        variable = struct.pack("<BBHI", TYPE_RDP_NEG_RSP, result.flags, _NEG_LENGTH, result.selected_protocol)
    else:
        # The failure PDU has no flags; FreeRDP and Windows send 0.
        variable = struct.pack("<BBHI", TYPE_RDP_NEG_FAILURE, 0, _NEG_LENGTH, result.code)
    return _with_fixed_header(TPDU_CONNECTION_CONFIRM, _CONFIRM_SOURCE_REFERENCE, variable)


def parse_connection_confirm(tpdu: bytes) -> ConnectionConfirm:
    variable = _fixed_header(tpdu, TPDU_CONNECTION_CONFIRM, "Connection Confirm")
    if not variable:
        return ConnectionConfirm(None)
    if len(variable) != _NEG_LENGTH:
        raise ProtocolError(f"X.224 Connection Confirm with {len(variable)} bytes of negotiation data")
    kind, flags, length, value = struct.unpack("<BBHI", variable)
    if length != _NEG_LENGTH:
        raise ProtocolError(f"negotiation data length {length}")
    if kind == TYPE_RDP_NEG_RSP:
        return ConnectionConfirm(NegotiationResponse(value, flags))
    if kind == TYPE_RDP_NEG_FAILURE:
        return ConnectionConfirm(NegotiationFailure(value))
    raise ProtocolError(f"negotiation type {kind} in a Connection Confirm")


def parse_data(tpdu: bytes) -> bytes:
    """The user data of a Data TPDU (the MCS PDU)."""
    if len(tpdu) < 3:
        raise ProtocolError("X.224 Data TPDU shorter than its header")
    length_indicator = tpdu[0]
    if tpdu[1] & 0xF0 != TPDU_DATA:
        raise ProtocolError(f"X.224 code 0x{tpdu[1]:02X} is not Data")
    # LI is 2 for class 0; anything else means a header we do not understand.
    if length_indicator != 2:
        raise ProtocolError(f"X.224 Data length indicator {length_indicator}")
    return bytes(tpdu[3:])


def build_data(user_data: bytes) -> bytes:
    return DATA_HEADER + user_data


def wrap_data(user_data: bytes) -> bytes:
    """A whole TPKT frame carrying one X.224 Data TPDU."""
    return build_tpkt(DATA_HEADER + user_data)


def unwrap_data(frame: bytes) -> bytes:
    return parse_data(parse_tpkt(frame))
