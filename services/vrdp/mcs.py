"""T.125 MCS PDUs used by RDP: BER Connect-Initial/Response and the PER DomainMCSPDUs of the domain.

Functions take and return the X.224 user data; the GCC inside the connect user data is services.vrdp.gcc."""

from __future__ import annotations

from dataclasses import dataclass, fields

from services.vrdp.tpkt import ProtocolError

# BER tags
TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30
CONNECT_INITIAL = 101  # [APPLICATION 101], written 7F 65
CONNECT_RESPONSE = 102

# DomainMCSPDU CHOICE indices (T.125 §7, the PER choice is the top 6 bits of the first byte)
ERECT_DOMAIN_REQUEST = 1
DISCONNECT_PROVIDER_ULTIMATUM = 8
ATTACH_USER_REQUEST = 10
ATTACH_USER_CONFIRM = 11
CHANNEL_JOIN_REQUEST = 14
CHANNEL_JOIN_CONFIRM = 15
SEND_DATA_REQUEST = 25
SEND_DATA_INDICATION = 26

# UserId is INTEGER (1001..65535); PER sends it as an offset from the lower bound.
USER_ID_BASE = 1001
IO_CHANNEL_ID = 1003  # hard-coded by rdesktop and FreeRDP as the global channel

RESULT_SUCCESSFUL = 0
RESULT_DOMAIN_MERGING = 1
RESULT_DOMAIN_NOT_HIERARCHICAL = 2
RESULT_NO_SUCH_CHANNEL = 3
RESULT_NO_SUCH_DOMAIN = 4
RESULT_NO_SUCH_USER = 5
RESULT_NOT_ADMITTED = 6
RESULT_OTHER_USER_ID = 7
RESULT_PARAMETERS_UNACCEPTABLE = 8
RESULT_TOKEN_NOT_AVAILABLE = 9
RESULT_TOKEN_NOT_POSSESSED = 10
RESULT_TOO_MANY_CHANNELS = 11
RESULT_TOO_MANY_TOKENS = 12
RESULT_TOO_MANY_USERS = 13
RESULT_UNSPECIFIED_FAILURE = 14
RESULT_USER_REJECTED = 15

REASON_DOMAIN_DISCONNECTED = 0
REASON_PROVIDER_INITIATED = 1
REASON_TOKEN_PURGED = 2
REASON_USER_REQUESTED = 3
REASON_CHANNEL_PURGED = 4

PRIORITY_TOP = 0
PRIORITY_HIGH = 1
PRIORITY_MEDIUM = 2
PRIORITY_LOW = 3
SEGMENTATION_BEGIN = 0x2
SEGMENTATION_END = 0x1
SEGMENTATION_WHOLE = SEGMENTATION_BEGIN | SEGMENTATION_END

PER_MAX_LENGTH = 0x3FFF  # the 2-byte form; longer needs PER fragmentation, which no RDP peer sends


@dataclass(frozen=True)
class DomainParameters:
    max_channel_ids: int
    max_user_ids: int
    max_token_ids: int
    num_priorities: int
    min_throughput: int
    max_height: int
    max_mcs_pdu_size: int
    protocol_version: int


@dataclass(frozen=True)
class ConnectInitial:
    target_parameters: DomainParameters
    minimum_parameters: DomainParameters
    maximum_parameters: DomainParameters
    user_data: bytes  # GCC Conference Create Request
    calling_domain_selector: bytes = b"\x01"
    called_domain_selector: bytes = b"\x01"
    upward_flag: bool = True


@dataclass(frozen=True)
class ConnectResponse:
    domain_parameters: DomainParameters
    user_data: bytes  # GCC Conference Create Response
    result: int = RESULT_SUCCESSFUL
    called_connect_id: int = 0


# ---------------------------------------------------------------- BER


class _BerReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def _byte(self) -> int:
        if self.position >= len(self.data):
            raise ProtocolError("BER element truncated")
        value = self.data[self.position]
        self.position += 1
        return value

    def _length(self) -> int:
        first = self._byte()
        if first < 0x80:
            return first
        count = first & 0x7F
        # 0x80 is the indefinite form, which DER-style MCS never uses.
        if not 1 <= count <= 4:
            raise ProtocolError(f"BER length form 0x{first:02X}")
        value = 0
        for _ in range(count):
            value = (value << 8) | self._byte()
        return value

    def _tag(self) -> int:
        first = self._byte()
        if first & 0x1F != 0x1F:
            return first
        # High tag number form: only the single-subsequent-octet case occurs in MCS.
        number = self._byte()
        if number & 0x80:
            raise ProtocolError("BER tag number too large")
        return (first << 8) | number

    def element(self, tag: int) -> bytes:
        actual = self._tag()
        if actual != tag:
            raise ProtocolError(f"BER tag 0x{actual:X} where 0x{tag:X} was expected")
        length = self._length()
        end = self.position + length
        if end > len(self.data):
            raise ProtocolError(f"BER length {length} overruns the PDU")
        value = self.data[self.position:end]
        self.position = end
        return value

    def integer(self, tag: int = TAG_INTEGER) -> int:
        value = self.element(tag)
        if not 1 <= len(value) <= 4:
            raise ProtocolError(f"BER integer of {len(value)} bytes")
        # MCS peers write 65535 as 02 02 FF FF, so read the octets as unsigned.
        return int.from_bytes(value, "big")

    def boolean(self) -> bool:
        value = self.element(TAG_BOOLEAN)
        if len(value) != 1:
            raise ProtocolError("BER boolean is not one byte")
        return value[0] != 0

    def domain_parameters(self) -> DomainParameters:
        inner = _BerReader(self.element(TAG_SEQUENCE))
        values = [inner.integer() for _ in range(8)]
        return DomainParameters(*values)


def _application_tag(number: int) -> int:
    return (0x7F << 8) | number


def _ber_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length <= 0xFF:
        return bytes((0x81, length))
    if length <= 0xFFFF:
        return bytes((0x82,)) + length.to_bytes(2, "big")
    raise ValueError(f"BER length {length} too large for MCS")


def _ber_element(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes(2, "big") if tag > 0xFF else bytes((tag,))
    return tag_bytes + _ber_length(len(value)) + value


def _ber_integer(value: int, tag: int = TAG_INTEGER) -> bytes:
    if value < 0:
        raise ValueError("MCS integers are non-negative")
    # Shortest two's-complement form, as Windows writes 65528 as 00 FF F8.
    size = 1
    while value >= 1 << (8 * size - 1):
        size += 1
    if size > 4:
        raise ValueError(f"integer {value} too large for MCS")
    return _ber_element(tag, value.to_bytes(size, "big"))


def _ber_domain_parameters(parameters: DomainParameters) -> bytes:
    return _ber_element(TAG_SEQUENCE, b"".join(_ber_integer(getattr(parameters, field.name))
                                               for field in fields(parameters)))


def parse_connect_initial(data: bytes) -> ConnectInitial:
    body = _BerReader(_BerReader(data).element(_application_tag(CONNECT_INITIAL)))
    calling = body.element(TAG_OCTET_STRING)
    called = body.element(TAG_OCTET_STRING)
    upward = body.boolean()
    target = body.domain_parameters()
    minimum = body.domain_parameters()
    maximum = body.domain_parameters()
    user_data = body.element(TAG_OCTET_STRING)
    return ConnectInitial(target, minimum, maximum, bytes(user_data), bytes(calling), bytes(called), upward)


def build_connect_initial(initial: ConnectInitial) -> bytes:
    body = (_ber_element(TAG_OCTET_STRING, initial.calling_domain_selector)
            + _ber_element(TAG_OCTET_STRING, initial.called_domain_selector)
            + _ber_element(TAG_BOOLEAN, b"\xff" if initial.upward_flag else b"\x00")
            + _ber_domain_parameters(initial.target_parameters)
            + _ber_domain_parameters(initial.minimum_parameters)
            + _ber_domain_parameters(initial.maximum_parameters)
            + _ber_element(TAG_OCTET_STRING, initial.user_data))
    return _ber_element(_application_tag(CONNECT_INITIAL), body)


def parse_connect_response(data: bytes) -> ConnectResponse:
    body = _BerReader(_BerReader(data).element(_application_tag(CONNECT_RESPONSE)))
    result = body.integer(TAG_ENUMERATED)
    connect_id = body.integer()
    parameters = body.domain_parameters()
    user_data = body.element(TAG_OCTET_STRING)
    return ConnectResponse(parameters, bytes(user_data), result, connect_id)


def build_connect_response(response: ConnectResponse) -> bytes:
    body = (_ber_integer(response.result, TAG_ENUMERATED)
            + _ber_integer(response.called_connect_id)
            + _ber_domain_parameters(response.domain_parameters)
            + _ber_element(TAG_OCTET_STRING, response.user_data))
    return _ber_element(_application_tag(CONNECT_RESPONSE), body)


def merge_domain_parameters(target: DomainParameters, minimum: DomainParameters,
                            maximum: DomainParameters) -> DomainParameters:
    """The parameters a server answers with, by the rules Windows and FreeRDP apply.

    Spec example 4.1.3/4.1.4: target (34, 2, 0, 1, 0, 1, 65535, 2) becomes (34, 3, 0, 1, 0, 1, 65528, 2).
    Raises ProtocolError when the client's ranges leave nothing RDP can work with."""
    if target.max_channel_ids >= 4:
        channels = target.max_channel_ids
    elif maximum.max_channel_ids >= 4:
        channels = 4
    else:
        raise ProtocolError("client allows fewer than 4 MCS channels")
    if target.max_user_ids >= 3:
        users = target.max_user_ids
    elif maximum.max_user_ids >= 3:
        users = 3
    else:
        raise ProtocolError("client allows fewer than 3 MCS users")
    if minimum.num_priorities > 1:
        raise ProtocolError("client insists on more than one MCS priority")
    if target.max_height != 1 and minimum.max_height > 1:
        raise ProtocolError("client insists on an MCS domain height above 1")
    if target.max_mcs_pdu_size >= 1024:
        if target.max_mcs_pdu_size <= 65528:
            pdu_size = target.max_mcs_pdu_size
        elif 124 <= minimum.max_mcs_pdu_size <= 65528:
            pdu_size = 65528
        else:
            raise ProtocolError("client's MCS PDU size range is unusable")
    elif maximum.max_mcs_pdu_size >= 124:
        pdu_size = min(maximum.max_mcs_pdu_size, 65528)
    else:
        raise ProtocolError("client's MCS PDU size range is unusable")
    if target.protocol_version != 2 and not minimum.protocol_version <= 2 <= maximum.protocol_version:
        raise ProtocolError("client does not speak MCS protocol version 2")
    return DomainParameters(channels, users, target.max_token_ids, 1, target.min_throughput, 1, pdu_size, 2)


# ---------------------------------------------------------------- PER DomainMCSPDUs


@dataclass(frozen=True)
class ErectDomainRequest:
    sub_height: int = 0
    sub_interval: int = 0


@dataclass(frozen=True)
class AttachUserRequest:
    pass


@dataclass(frozen=True)
class AttachUserConfirm:
    result: int
    initiator: int | None  # the user id (>= 1001); absent when the attach failed


@dataclass(frozen=True)
class ChannelJoinRequest:
    initiator: int
    channel_id: int


@dataclass(frozen=True)
class ChannelJoinConfirm:
    result: int
    initiator: int
    requested: int
    channel_id: int | None  # absent when the join failed


@dataclass(frozen=True)
class SendDataRequest:
    initiator: int
    channel_id: int
    data: bytes
    priority: int = PRIORITY_HIGH
    segmentation: int = SEGMENTATION_WHOLE


@dataclass(frozen=True)
class SendDataIndication:
    initiator: int
    channel_id: int
    data: bytes
    priority: int = PRIORITY_HIGH
    segmentation: int = SEGMENTATION_WHOLE


@dataclass(frozen=True)
class DisconnectProviderUltimatum:
    reason: int = REASON_USER_REQUESTED


DomainPdu = (ErectDomainRequest | AttachUserRequest | AttachUserConfirm | ChannelJoinRequest
             | ChannelJoinConfirm | SendDataRequest | SendDataIndication | DisconnectProviderUltimatum)


class _PerReader:
    def __init__(self, data: bytes, position: int) -> None:
        self.data = data
        self.position = position

    def take(self, count: int) -> bytes:
        end = self.position + count
        if end > len(self.data):
            raise ProtocolError("MCS PDU truncated")
        value = self.data[self.position:end]
        self.position = end
        return value

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def user_id(self) -> int:
        value = self.u16() + USER_ID_BASE
        if value > 0xFFFF:
            raise ProtocolError(f"MCS user id {value} above 65535")
        return value

    def length(self) -> int:
        first = self.byte()
        if first & 0x80 == 0:
            return first
        if first & 0x40:
            raise ProtocolError("PER fragmented length")
        return ((first & 0x3F) << 8) | self.byte()

    def integer(self) -> int:
        # Unconstrained PER INTEGER: a length octet, then that many value octets.
        size = self.length()
        if size > 4:
            raise ProtocolError(f"PER integer of {size} bytes")
        return int.from_bytes(self.take(size), "big")

    def end(self) -> None:
        if self.position != len(self.data):
            raise ProtocolError(f"{len(self.data) - self.position} trailing bytes after the MCS PDU")


def per_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length <= PER_MAX_LENGTH:
        return bytes((0x80 | (length >> 8), length & 0xFF))
    raise ValueError(f"PER length {length} needs fragmentation")


def _user_id(value: int) -> bytes:
    if not USER_ID_BASE <= value <= 0xFFFF:
        raise ValueError(f"MCS user id {value} outside 1001..65535")
    return (value - USER_ID_BASE).to_bytes(2, "big")


def _u16(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"MCS channel id {value} outside 0..65535")
    return value.to_bytes(2, "big")


def _header(choice: int, options: int = 0) -> bytes:
    return bytes(((choice << 2) | options,))


def _small(value: int, bits: int, name: str) -> int:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"MCS {name} {value} does not fit {bits} bits")
    return value


def build_domain_pdu(pdu: DomainPdu) -> bytes:
    if isinstance(pdu, ErectDomainRequest):
        return (_header(ERECT_DOMAIN_REQUEST) + _per_integer(pdu.sub_height) + _per_integer(pdu.sub_interval))
    if isinstance(pdu, AttachUserRequest):
        return _header(ATTACH_USER_REQUEST)
    if isinstance(pdu, AttachUserConfirm):
        # Bit 1 of the header flags the optional initiator; result is a full octet as all peers write it.
        present = pdu.initiator is not None
        return (_header(ATTACH_USER_CONFIRM, 2 if present else 0) + bytes((_small(pdu.result, 4, "result"),))
                + (_user_id(pdu.initiator) if present else b""))
    if isinstance(pdu, ChannelJoinRequest):
        return _header(CHANNEL_JOIN_REQUEST) + _user_id(pdu.initiator) + _u16(pdu.channel_id)
    if isinstance(pdu, ChannelJoinConfirm):
        present = pdu.channel_id is not None
        return (_header(CHANNEL_JOIN_CONFIRM, 2 if present else 0) + bytes((_small(pdu.result, 4, "result"),))
                + _user_id(pdu.initiator) + _u16(pdu.requested) + (_u16(pdu.channel_id) if present else b""))
    if isinstance(pdu, (SendDataRequest, SendDataIndication)):
        choice = SEND_DATA_REQUEST if isinstance(pdu, SendDataRequest) else SEND_DATA_INDICATION
        flags = (_small(pdu.priority, 2, "priority") << 6) | (_small(pdu.segmentation, 2, "segmentation") << 4)
        return (_header(choice) + _user_id(pdu.initiator) + _u16(pdu.channel_id) + bytes((flags,))
                + per_length(len(pdu.data)) + pdu.data)
    if isinstance(pdu, DisconnectProviderUltimatum):
        # The 3-bit reason straddles the octet boundary: 2 bits in the header byte, 1 in the next.
        reason = _small(pdu.reason, 3, "reason")
        return bytes(((DISCONNECT_PROVIDER_ULTIMATUM << 2) | (reason >> 1), (reason & 1) << 7))
    raise TypeError(f"not an MCS domain PDU: {pdu!r}")


def _per_integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("MCS integers are non-negative")
    size = max(1, (value.bit_length() + 7) // 8)
    if size > 4:
        raise ValueError(f"integer {value} too large")
    return bytes((size,)) + value.to_bytes(size, "big")


def domain_pdu_choice(data: bytes) -> int:
    if not data:
        raise ProtocolError("empty MCS PDU")
    return data[0] >> 2


def _parse_erect_domain(data: bytes) -> ErectDomainRequest:
    reader = _PerReader(data, 1)
    try:
        pdu = ErectDomainRequest(reader.integer(), reader.integer())
        reader.end()
        return pdu
    except ProtocolError:
        # rdesktop writes subHeight and subInterval as two plain 16-bit words (04 00 01 00 01).
        if len(data) != 5:
            raise
        return ErectDomainRequest(int.from_bytes(data[1:3], "big"), int.from_bytes(data[3:5], "big"))


def parse_domain_pdu(data: bytes) -> DomainPdu:
    choice = domain_pdu_choice(data)
    options = data[0] & 0x3
    reader = _PerReader(data, 1)
    pdu: DomainPdu
    if choice == ERECT_DOMAIN_REQUEST:
        return _parse_erect_domain(data)
    elif choice == ATTACH_USER_REQUEST:
        pdu = AttachUserRequest()
    elif choice == ATTACH_USER_CONFIRM:
        result = reader.byte()
        initiator = reader.user_id() if options & 2 else None
        pdu = AttachUserConfirm(result, initiator)
    elif choice == CHANNEL_JOIN_REQUEST:
        pdu = ChannelJoinRequest(reader.user_id(), reader.u16())
    elif choice == CHANNEL_JOIN_CONFIRM:
        result = reader.byte()
        initiator = reader.user_id()
        requested = reader.u16()
        pdu = ChannelJoinConfirm(result, initiator, requested, reader.u16() if options & 2 else None)
    elif choice in (SEND_DATA_REQUEST, SEND_DATA_INDICATION):
        initiator = reader.user_id()
        channel_id = reader.u16()
        flags = reader.byte()
        payload = bytes(reader.take(reader.length()))
        kind = SendDataRequest if choice == SEND_DATA_REQUEST else SendDataIndication
        pdu = kind(initiator, channel_id, payload, flags >> 6, (flags >> 4) & 0x3)
    elif choice == DISCONNECT_PROVIDER_ULTIMATUM:
        reason = ((options << 1) | (reader.byte() >> 7))
        pdu = DisconnectProviderUltimatum(reason)
    else:
        raise ProtocolError(f"unsupported MCS domain PDU choice {choice}")
    reader.end()
    return pdu
