"""The server side of one RDP connection as a sans-I/O state machine (after h11 and IronRDP's acceptor): socket
bytes into receive(), typed events out, data_to_send() for the socket; output_encoder makes the bitmap updates."""

from __future__ import annotations

import enum
import logging
import ssl
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from services.vrdp import gcc, mcs, security, x224
from services.vrdp.output_encoder import (
    MAX_UPDATE_SIZE,
    OutputEncoder,
    OutputPdu,
    SlowPathOutput,
)
from services.vrdp.pdu import activation, capabilities, info, share
from services.vrdp.pdu import input as rdp_input
from services.vrdp.tls import TlsSession
from services.vrdp.tpkt import (
    FASTPATH_FLAG_ENCRYPTED,
    FASTPATH_FLAG_SECURE_CHECKSUM,
    FrameKind,
    FrameReader,
    ProtocolError,
    build_fastpath,
    build_tpkt,
    parse_fastpath_header,
    parse_tpkt,
)

log = logging.getLogger("headbox.vrdp.connection")

SEC_INFO_PKT = security.SEC_INFO_PKT

SERVER_USER_ID = 1002     # the initiator Windows puts on every Send Data Indication
SUPPORTED_BPP = (8, 15, 16, 24, 32)
# CS_CORE supportedColorDepths bits; 8 bpp has none (every client draws it).
_SUPPORTED_DEPTH_BITS = {15: gcc.RNS_UD_15BPP_SUPPORT, 16: gcc.RNS_UD_16BPP_SUPPORT,
                         24: gcc.RNS_UD_24BPP_SUPPORT, 32: gcc.RNS_UD_32BPP_SUPPORT}
# Strength order of the RC4 methods (their flag values are not ordered).
_STRENGTH = {security.ENCRYPTION_METHOD_40BIT: 40, security.ENCRYPTION_METHOD_56BIT: 56,
             security.ENCRYPTION_METHOD_128BIT: 128}
MIN_DESKTOP, MAX_DESKTOP = 200, 8192


class State(enum.Enum):
    CONNECTION_REQUEST = "X.224 connection request"
    TLS_HANDSHAKE = "TLS handshake"
    CONNECT_INITIAL = "MCS connect initial"
    ERECT_DOMAIN = "MCS erect domain"
    ATTACH_USER = "MCS attach user"
    CHANNEL_JOIN = "MCS channel join"
    SECURITY_EXCHANGE = "security exchange"
    CLIENT_INFO = "client info"
    CONFIRM_ACTIVE = "confirm active"
    FINALIZATION = "finalization"
    ACTIVE = "active"
    CLOSED = "closed"


# --- events for the owner ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Refused:
    """The X.224 negotiation failed; send data_to_send() and close the socket."""
    requested_protocols: int
    code: int


@dataclass(frozen=True)
class ClientInfoReceived:
    """Credentials for the authentication step (the owner decides; nothing is checked here)."""
    user_name: str
    password: str
    domain: str
    client_name: str


@dataclass(frozen=True)
class Activated:
    """The client is ready for graphics at this size and depth: send it the whole screen."""
    width: int
    height: int
    bpp: int


@dataclass(frozen=True)
class RefreshRequested:
    rects: tuple[tuple[int, int, int, int], ...]  # (x, y, width, height)


@dataclass(frozen=True)
class OutputSuppressed:
    suppressed: bool


@dataclass(frozen=True)
class Disconnected:
    """The client said goodbye (MCS Disconnect Provider Ultimatum, X.224 disconnect or Shutdown)."""
    reason: str


# Input events are the dataclasses of services.vrdp.pdu.input (KeyboardEvent, MouseEvent, ...).
Event = object


@dataclass
class ConnectionConfig:
    # None with tls_error None: TLS is not offered (Security/Method RDP).
    tls_context: ssl.SSLContext | None
    # The size of the screen the server shows, or None to take the client's requested size.
    desktop_size: Callable[[], tuple[int, int] | None] | None = None
    share_id: int = share.DEFAULT_SHARE_ID
    max_bpp: int = 32
    # TLS was asked for but its certificate is unusable: TLS clients get SSL_CERT_NOT_ON_SERVER.
    tls_error: str | None = None
    # The key behind the proprietary certificate; None: Standard RDP Security is not offered.
    server_key: security.ServerKey | None = None
    min_encryption: int = security.ENCRYPTION_METHOD_128BIT


@dataclass
class _Client:
    requested_protocols: int = 0
    core: gcc.ClientCoreData | None = None
    channels: tuple[gcc.ChannelDef, ...] = ()
    info: info.ClientInfo | None = None
    caps: capabilities.ClientCapabilities | None = None
    joined: set[int] = field(default_factory=set)


class Connection:
    """One client. Everything it cannot decode raises ProtocolError; the owner then closes only this
    connection. Not thread-safe: one owner thread calls receive() and the send_* methods."""

    def __init__(self, config: ConnectionConfig):
        self.config = config
        self.state = State.CONNECTION_REQUEST
        self.client = _Client()
        self.user_id = 0
        self.width = self.height = 0
        self.bpp = 0
        self._reader = FrameReader()
        self._tls: TlsSession | None = None
        # Standard RDP Security: the server half before the Security Exchange, the RC4 channel after.
        self._standard: security.StandardSecurity | None = None
        self._secure: security.SecureChannel | None = None
        self._encrypt_license = False
        # The graphics output of the current activation, made when the client completes it.
        self._output: OutputEncoder | None = None
        self._out = bytearray()
        self._events: list[Event] = []

    # --- byte plumbing ------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def active(self) -> bool:
        return self.state is State.ACTIVE

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def _send(self, data: bytes) -> None:
        if self._tls is None:
            self._out += data
        else:
            self._tls.write(data)
            self._out += self._tls.bytes_to_send()

    def _send_mcs(self, payload: bytes, channel_id: int = mcs.IO_CHANNEL_ID) -> None:
        if self._secure is not None:  # every slow-path PDU after the Security Exchange is sealed
            payload = self._secure.encrypt_pdu(payload)
        self._send_mcs_raw(payload, channel_id)

    def _send_mcs_raw(self, payload: bytes, channel_id: int = mcs.IO_CHANNEL_ID) -> None:
        self._send(x224.wrap_data(mcs.build_domain_pdu(
            mcs.SendDataIndication(SERVER_USER_ID, channel_id, payload))))

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes read from the socket; returns what happened. b"" means the peer closed."""
        if self.state is State.CLOSED:
            raise ProtocolError("connection is closed")
        if not data:
            self.state = State.CLOSED
            return [Disconnected("connection closed by the client")]
        try:
            if self._tls is None:
                self._reader.feed(data)
            else:
                self._tls.receive(data)
                self._out += self._tls.bytes_to_send()
                if self._tls.handshake_complete:
                    if self.state is State.TLS_HANDSHAKE:
                        log.info("Using TLS connection. Protocol: %s", self._tls.version)
                        self.state = State.CONNECT_INITIAL
                    self._reader.feed(self._tls.read())
                    if self._tls.closed:
                        self._events.append(Disconnected("TLS closed by the client"))
                        self.state = State.CLOSED
            while self.state is not State.CLOSED and (frame := self._reader.next_frame()) is not None:
                self._frame(frame.kind, frame.data)
        except ProtocolError:
            self.state = State.CLOSED
            raise
        except (ValueError, struct.error, IndexError, KeyError, UnicodeError, OverflowError) as exc:
            # A builder refusing what a hostile client made us compute is still the client's fault.
            self.state = State.CLOSED
            raise ProtocolError(f"{type(exc).__name__}: {exc}") from None
        events, self._events = self._events, []
        return events

    # --- the connection sequence --------------------------------------------------------------------

    def _frame(self, kind: FrameKind, frame: bytes) -> None:
        if kind is FrameKind.FASTPATH:
            if self.state not in (State.FINALIZATION, State.ACTIVE, State.CONFIRM_ACTIVE):
                raise ProtocolError("fast-path input before activation")
            self._fastpath_input(frame)
            return
        if self.state is State.CONNECTION_REQUEST:
            self._connection_request(frame)
            return
        tpdu = bytes(frame[4:])
        code = x224.tpdu_code(tpdu)
        if code == x224.TPDU_DISCONNECT_REQUEST:
            self._events.append(Disconnected("X.224 disconnect request"))
            self.state = State.CLOSED
            return
        payload = x224.unwrap_data(frame)
        if self.state is State.CONNECT_INITIAL:
            self._connect_initial(payload)
            return
        pdu = mcs.parse_domain_pdu(payload)
        if isinstance(pdu, mcs.DisconnectProviderUltimatum):
            self._events.append(Disconnected(f"MCS disconnect, reason {pdu.reason}"))
            self.state = State.CLOSED
        elif isinstance(pdu, mcs.ErectDomainRequest) and self.state is State.ERECT_DOMAIN:
            self.state = State.ATTACH_USER
        elif isinstance(pdu, mcs.AttachUserRequest) and self.state in (State.ERECT_DOMAIN, State.ATTACH_USER):
            self._send(x224.wrap_data(mcs.build_domain_pdu(
                mcs.AttachUserConfirm(mcs.RESULT_SUCCESSFUL, self.user_id))))
            self.state = State.CHANNEL_JOIN
        elif isinstance(pdu, mcs.ChannelJoinRequest) and self.state is State.CHANNEL_JOIN:
            self._channel_join(pdu)
        elif isinstance(pdu, mcs.SendDataRequest) and self.state in (
                State.CHANNEL_JOIN, State.SECURITY_EXCHANGE, State.CLIENT_INFO, State.CONFIRM_ACTIVE,
                State.FINALIZATION, State.ACTIVE):
            self._send_data(pdu)
        else:
            raise ProtocolError(f"unexpected {type(pdu).__name__} in state {self.state.value}")

    def _refuse(self, requested: int, code: int) -> None:
        self._send(build_tpkt(x224.build_connection_confirm(
            x224.ConnectionConfirm(x224.NegotiationFailure(code)))))
        self._events.append(Refused(requested, code))
        self.state = State.CLOSED

    def _connection_request(self, frame: bytes) -> None:
        """Security selection as VirtualBox's server does it (research/vrde.md 4.4); never CredSSP."""
        request = x224.parse_connection_request(parse_tpkt(frame))
        requested = request.requested_protocols
        self.client.requested_protocols = requested
        config = self.config
        tls_offered = config.tls_context is not None or config.tls_error is not None
        standard_offered = config.server_key is not None
        if request.negotiation is not None:
            log.info("Negotiating security method with the client.")
        if request.negotiation is not None and requested & x224.PROTOCOL_SSL:
            log.info("The client requests Enhanced RDP Security.")
            if not tls_offered:
                self._refuse(requested, x224.SSL_NOT_ALLOWED_BY_SERVER)
            elif config.tls_context is None:
                log.warning("TLS client refused: %s", config.tls_error)
                self._refuse(requested, x224.SSL_CERT_NOT_ON_SERVER)
            else:
                self._start_tls()
            return
        if requested != x224.PROTOCOL_RDP or not standard_offered:
            # Only TLS left to offer (or the client asked for CredSSP alone, which we never serve).
            self._refuse(requested, x224.SSL_REQUIRED_BY_SERVER)
            return
        log.info("Standard RDP Security.")
        # A client that sent no RDP_NEG_REQ gets the bare confirm, as the spec and RDP 4/5 clients expect.
        result = None if request.negotiation is None else x224.NegotiationResponse(x224.PROTOCOL_RDP)
        self._send(build_tpkt(x224.build_connection_confirm(x224.ConnectionConfirm(result))))
        self._standard = security.StandardSecurity(config.server_key, security.ENCRYPTION_METHOD_128BIT)
        self.state = State.CONNECT_INITIAL

    def _start_tls(self) -> None:
        log.info("Enhanced RDP Security.")
        self._send(build_tpkt(x224.build_connection_confirm(x224.ConnectionConfirm(
            x224.NegotiationResponse(x224.PROTOCOL_SSL, x224.EXTENDED_CLIENT_DATA_SUPPORTED)))))
        self._tls = TlsSession(self.config.tls_context, server_side=True)
        self.state = State.TLS_HANDSHAKE
        early = self._reader.take_buffered()
        if early:  # a ClientHello that arrived with the request
            self._tls.receive(early)
            self._out += self._tls.bytes_to_send()

    def _connect_initial(self, payload: bytes) -> None:
        initial = mcs.parse_connect_initial(payload)
        parameters = mcs.merge_domain_parameters(initial.target_parameters, initial.minimum_parameters,
                                                 initial.maximum_parameters)
        client = gcc.parse_conference_create_request(initial.user_data)
        channels = client.channels
        if len(channels) > gcc.MAX_STATIC_CHANNELS:
            raise ProtocolError(f"{len(channels)} static channels, at most {gcc.MAX_STATIC_CHANNELS}")
        self.client.core, self.client.channels = client.core, channels
        # The user channel must not collide with 1003 or the static channels 1004..1004+N-1.
        self.user_id = mcs.IO_CHANNEL_ID + 1 + len(channels)
        security_data = gcc.ServerSecurityData()
        if self._standard is not None:
            method = self._choose_encryption(client.security)
            self._standard = security.StandardSecurity(self.config.server_key, method)
            # RDP 4 and 5 clients alike take the proprietary certificate (X.509 chains are optional).
            security_data = gcc.ServerSecurityData(method, security.ENCRYPTION_LEVEL_CLIENT_COMPATIBLE,
                                                   self._standard.server_random, self._standard.certificate)
            log.warning("Standard RDP Security with %d-bit RC4: weak encryption without TLS "
                        "(Security/Method=TLS refuses it)", _STRENGTH[method])
        server = gcc.ServerData(
            gcc.ServerCoreData(client_requested_protocols=self.client.requested_protocols),
            gcc.ServerNetworkData.for_channels(channels),
            security_data)
        self._send(x224.wrap_data(mcs.build_connect_response(
            mcs.ConnectResponse(parameters, gcc.build_conference_create_response(server)))))
        self.state = State.ERECT_DOMAIN

    def _choose_encryption(self, client_security: gcc.ClientSecurityData | None) -> int:
        offered = 0
        if client_security is not None:
            offered = client_security.encryption_methods | client_security.ext_encryption_methods
        minimum = _STRENGTH.get(self.config.min_encryption, 128)
        for method in (security.ENCRYPTION_METHOD_128BIT, security.ENCRYPTION_METHOD_56BIT,
                       security.ENCRYPTION_METHOD_40BIT):
            if offered & method and _STRENGTH[method] >= minimum:
                return method
        if offered & security.ENCRYPTION_METHOD_FIPS:
            raise ProtocolError("the client offers only FIPS encryption, which Standard RDP Security "
                                "here does not serve (use TLS)")
        raise ProtocolError(f"the client offers no RC4 encryption of at least {minimum} bits "
                            f"(encryption methods 0x{offered:X})")

    def _channel_ids(self) -> set[int]:
        return ({self.user_id, mcs.IO_CHANNEL_ID}
                | {mcs.IO_CHANNEL_ID + 1 + index for index in range(len(self.client.channels))})

    def _channel_join(self, pdu: mcs.ChannelJoinRequest) -> None:
        if pdu.initiator != self.user_id:
            raise ProtocolError(f"channel join from user {pdu.initiator}, not {self.user_id}")
        if pdu.channel_id in self._channel_ids():
            self.client.joined.add(pdu.channel_id)
            confirm = mcs.ChannelJoinConfirm(mcs.RESULT_SUCCESSFUL, self.user_id, pdu.channel_id, pdu.channel_id)
        else:
            confirm = mcs.ChannelJoinConfirm(mcs.RESULT_NO_SUCH_CHANNEL, self.user_id, pdu.channel_id, None)
        self._send(x224.wrap_data(mcs.build_domain_pdu(confirm)))
        if self.client.joined >= self._channel_ids():
            self.state = State.SECURITY_EXCHANGE if self._standard is not None else State.CLIENT_INFO

    def _send_data(self, pdu: mcs.SendDataRequest) -> None:
        if pdu.channel_id != mcs.IO_CHANNEL_ID and pdu.channel_id not in self._channel_ids():
            raise ProtocolError(f"data on unknown channel {pdu.channel_id}")
        data = pdu.data
        flags = None
        if self._standard is not None:
            if self._secure is None:
                if pdu.channel_id != mcs.IO_CHANNEL_ID:
                    raise ProtocolError(f"channel {pdu.channel_id} data before the Security Exchange")
                self._security_exchange(data)
                return
            flags, data = self._open_slow_path(data)
        if pdu.channel_id != mcs.IO_CHANNEL_ID:
            return  # static virtual channels are not served yet: their data is dropped
        if self.state is State.CHANNEL_JOIN:
            # aardwolf never joins the user channel; its Client Info ends the join phase all the same.
            self.state = State.CLIENT_INFO
        if self.state is State.CLIENT_INFO:
            if flags is None:  # TLS: the Client Info alone keeps a (plain) basic security header
                if len(data) < 4:
                    raise ProtocolError("Client Info PDU without its security header")
                flags, data = struct.unpack_from("<H", data)[0], data[4:]
            self._client_info(flags, data)
            return
        for control in share.split_share_control(data):
            if control.flow:
                continue
            if control.pdu_type == share.PDUTYPE_CONFIRMACTIVEPDU:
                self._confirm_active(control)
            elif control.pdu_type == share.PDUTYPE_DATAPDU:
                if self.state is State.CONFIRM_ACTIVE:
                    # Input racing a reactivation is harmless; anything else is out of order.
                    data_pdu = share.parse_share_data(control)
                    if data_pdu.pdu_type2 != share.PDUTYPE2_INPUT:
                        raise ProtocolError(f"Data PDU 0x{data_pdu.pdu_type2:02X} before Confirm Active")
                    continue
                self._data_pdu(share.parse_share_data(control))
            else:
                raise ProtocolError(f"share control PDU type {control.pdu_type} from a client")

    def _security_exchange(self, data: bytes) -> None:
        if self.state not in (State.SECURITY_EXCHANGE, State.CHANNEL_JOIN):
            raise ProtocolError(f"Security Exchange in state {self.state.value}")
        header = security.parse_security_header(data, encrypted_session=False)
        # The client allows an encrypted licence PDU with SEC_LICENSE_ENCRYPT_SC (MS-RDPBCGR 2.2.1.10).
        self._encrypt_license = bool(header.flags & security.SEC_LICENSE_ENCRYPT)
        self._secure = self._standard.accept_security_exchange(data)
        self.state = State.CLIENT_INFO

    def _open_slow_path(self, data: bytes) -> tuple[int, bytes]:
        """(security flags, plaintext) of a client PDU under Standard RDP Security."""
        header = security.parse_security_header(data)
        if not header.flags & security.SEC_ENCRYPT:
            # Encryption level "client compatible" encrypts both ways; a plain PDU is a downgrade.
            raise ProtocolError(f"unencrypted PDU (security flags 0x{header.flags:04X}) under Standard "
                                "RDP Security")
        plaintext = self._secure.open(header.signature, header.body,
                                      bool(header.flags & security.SEC_SECURE_CHECKSUM))
        return header.flags, plaintext

    def _fastpath_input(self, frame: bytes) -> None:
        header = parse_fastpath_header(frame)
        body = frame[header.header_size:]
        encrypted = bool(header.flags & FASTPATH_FLAG_ENCRYPTED)
        if self._secure is None:
            if encrypted:
                raise ProtocolError("encrypted fast-path input without Standard RDP Security")
        else:
            if not encrypted:
                raise ProtocolError("unencrypted fast-path input under Standard RDP Security")
            if len(body) < security.SIGNATURE_SIZE:
                raise ProtocolError("encrypted fast-path input shorter than its signature")
            body = self._secure.open(bytes(body[:security.SIGNATURE_SIZE]), bytes(body[security.SIGNATURE_SIZE:]),
                                     bool(header.flags & FASTPATH_FLAG_SECURE_CHECKSUM))
        self._events.extend(rdp_input.parse_fastpath_events(body, header.num_events))

    def _client_info(self, flags: int, data: bytes) -> None:
        if not flags & SEC_INFO_PKT:
            raise ProtocolError(f"expected the Client Info PDU, got security flags 0x{flags:04X}")
        core = self.client.core
        rdp5 = core is not None and core.version >= gcc.RDP_VERSION_5_PLUS
        client_info = info.parse_client_info(data, rdp5)
        self.client.info = client_info
        self._events.append(ClientInfoReceived(client_info.user_name, client_info.password,
                                               client_info.domain, core.client_name if core else ""))
        self._send_license()
        self._demand_active()

    def _send_license(self) -> None:
        licence = info.build_license_valid_client()  # carries its own SEC_LICENSE_PKT header
        if self._secure is not None and self._encrypt_license:
            self._send_mcs_raw(self._secure.encrypt_pdu(licence[4:], security.SEC_LICENSE_PKT))
        else:
            self._send_mcs_raw(licence)

    def _choose_geometry(self) -> None:
        core = self.client.core
        size = self.config.desktop_size() if self.config.desktop_size else None
        if size is None:
            size = (core.desktop_width, core.desktop_height)
        self.width = max(MIN_DESKTOP, min(MAX_DESKTOP, size[0]))
        self.height = max(MIN_DESKTOP, min(MAX_DESKTOP, size[1]))
        self.bpp = self._choose_bpp(core)

    def _announced_depths(self, core: gcc.ClientCoreData) -> set[int]:
        """The depths the client said it draws: the one it requests, the supportedColorDepths bits,
        and 8 bpp, which every client has."""
        depths = {8, core.requested_bpp}
        if core.supported_color_depths is not None:
            depths |= {bpp for bpp, bit in _SUPPORTED_DEPTH_BITS.items() if core.supported_color_depths & bit}
        return {bpp for bpp in depths if bpp in SUPPORTED_BPP}

    def _choose_bpp(self, core: gcc.ClientCoreData) -> int:
        allowed = {bpp for bpp in self._announced_depths(core) if bpp <= self.config.max_bpp} or {8}
        requested = core.requested_bpp
        return requested if requested in allowed else max(allowed)

    def _demand_active(self) -> None:
        if not self.bpp:
            self._choose_geometry()
        extra_flags = capabilities.DEFAULT_EXTRA_FLAGS
        if self._secure is not None:  # salted MACs number the packets: a replayed one fails
            extra_flags |= capabilities.ENC_SALTED_CHECKSUM
        sets = capabilities.server_capabilities(self.bpp, self.width, self.height, extra_flags=extra_flags,
                                                multifragment_max=MAX_UPDATE_SIZE)
        self._send_mcs(capabilities.build_demand_active(sets, self.config.share_id,
                                                       session_id=0))
        self.state = State.CONFIRM_ACTIVE

    def _confirm_active(self, control: share.ShareControlPdu) -> None:
        if self.state is not State.CONFIRM_ACTIVE:
            raise ProtocolError(f"Confirm Active in state {self.state.value}")
        confirm = capabilities.parse_confirm_active(share.build_share_control(
            control.pdu_type, control.pdu_source, control.body))
        if confirm.share_id != self.config.share_id:
            raise ProtocolError(f"Confirm Active for share 0x{confirm.share_id:X}")
        caps = capabilities.client_capabilities(confirm.capability_sets)
        self.client.caps = caps
        core = self.client.core
        if caps.bpp in SUPPORTED_BPP and caps.bpp <= self.config.max_bpp and (
                core is None or caps.bpp in self._announced_depths(core)):
            self.bpp = caps.bpp
        if self._secure is not None:
            # MS-RDPBCGR 5.3.6.1.1: salted MACs once both General capability sets carry the flag.
            self._secure.salted_mac = caps.salted_checksum
        # Fast-path input may follow at once (FreeRDP sends its input sync during finalization).
        self._reader.fastpath = True
        # FreeRDP's server order: Synchronize and Cooperate right away, nothing else until Font Map.
        self._send_mcs(activation.build_synchronize(self.user_id, self.config.share_id))
        self._send_mcs(activation.build_cooperate(self.config.share_id))
        self.state = State.FINALIZATION

    def _data_pdu(self, pdu: share.ShareDataPdu) -> None:
        if pdu.pdu_type2 == share.PDUTYPE2_INPUT:
            self._events.extend(rdp_input.parse_input_pdu(pdu.payload))
            return
        message = activation.parse_client_data(pdu)
        if isinstance(message, activation.Control):
            if message.action == activation.CTRLACTION_REQUEST_CONTROL:
                self._send_mcs(activation.build_granted_control(self.user_id, self.config.share_id))
        elif isinstance(message, activation.FontList):
            if self.state is State.FINALIZATION:
                self._send_mcs(activation.build_font_map(self.config.share_id))
                self.state = State.ACTIVE
                self._output = OutputEncoder(self.width, self.height, self.bpp, self.client.caps,
                                             self.config.share_id, encrypted=self._secure is not None)
                if self.bpp == 8:  # the client's palette must be ours before any 8 bpp bitmap
                    self._send_output(self._output.palette_update())
                self._events.append(Activated(self.width, self.height, self.bpp))
        elif isinstance(message, activation.RefreshRect):
            self._events.append(RefreshRequested(tuple(
                (r.left, r.top, r.right - r.left + 1, r.bottom - r.top + 1)
                for r in message.areas if r.right >= r.left and r.bottom >= r.top)))
        elif isinstance(message, activation.SuppressOutput):
            self._events.append(OutputSuppressed(not message.allow_display_updates))
        elif isinstance(message, activation.ShutdownRequest):
            self._events.append(Disconnected("client shutdown request"))
            self.state = State.CLOSED
        elif isinstance(message, activation.UnknownData):
            log.debug("ignoring client Data PDU 0x%02X", message.pdu_type2)
        # Synchronize, Cooperate, persistent key lists and frame acknowledgements need no answer.

    # --- output -------------------------------------------------------------------------------------

    def resize(self, width: int, height: int) -> None:
        """Deactivate and reactivate at a new desktop size (the guest changed its mode)."""
        if self.state not in (State.ACTIVE, State.FINALIZATION):
            return
        caps = self.client.caps
        if caps is not None and not caps.desktop_resize:
            log.info("client cannot resize its desktop; it keeps %dx%d", self.width, self.height)
            return
        self.width = max(MIN_DESKTOP, min(MAX_DESKTOP, width))
        self.height = max(MIN_DESKTOP, min(MAX_DESKTOP, height))
        self._send_mcs(activation.build_deactivate_all(self.config.share_id))
        self._demand_active()

    def send_bitmaps(self, frame: np.ndarray, rects: Iterable[tuple[int, int, int, int]]) -> None:
        """Bitmap updates for the (x, y, width, height) areas of a (h, w, 4) B,G,R,X frame (see
        OutputEncoder.bitmap_updates). Does nothing unless active."""
        if self.state is not State.ACTIVE:
            return
        self._send_output(self._output.bitmap_updates(frame, rects))

    def _send_output(self, pdus: Iterable[OutputPdu]) -> None:
        # Sealing stays here: fast- and slow-path PDUs share one RC4 stream, so they are sealed in the
        # order they go out, with the connection's other PDUs.
        for pdu in pdus:
            if isinstance(pdu, SlowPathOutput):
                self._send_mcs(pdu.share_data)
            elif self._secure is None:
                self._send(build_fastpath(pdu.body))
            else:
                mac, ciphertext = self._secure.seal(pdu.body)
                flags = FASTPATH_FLAG_ENCRYPTED | (FASTPATH_FLAG_SECURE_CHECKSUM if self._secure.salted_mac else 0)
                self._send(build_fastpath(mac + ciphertext, flags=flags))

    def close(self) -> None:
        """Say goodbye (MCS Disconnect Provider Ultimatum, TLS close_notify) before closing the socket."""
        if self.state is State.CLOSED:
            return
        if self.state not in (State.CONNECTION_REQUEST, State.TLS_HANDSHAKE):
            try:
                self._send(x224.wrap_data(mcs.build_domain_pdu(
                    mcs.DisconnectProviderUltimatum(mcs.REASON_PROVIDER_INITIATED))))
            except ProtocolError:
                pass
        if self._tls is not None:
            self._tls.close()
            self._out += self._tls.bytes_to_send()
        self.state = State.CLOSED
