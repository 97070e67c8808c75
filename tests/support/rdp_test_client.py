"""A scripted RDP client over a real TCP and TLS connection, for the RDP server's integration tests:
it connects and activates as xfreerdp does and reads what the server sends."""

import socket
import ssl
import struct
import time

from services.vrdp import mcs, x224
from services.vrdp.pdu import activation, capabilities, info, share
from services.vrdp.tpkt import FrameKind, FrameReader, build_tpkt, parse_tpkt
from tests.support.rdp_client_side import client_caps
from tests.support.rdp_vectors import XFREERDP_CONNECT_INITIAL


class Closed(Exception):
    """The server closed the connection."""


def tls_client_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what xfreerdp /cert:ignore does
    return context


class RdpClient:
    """A scripted RDP client over a real socket (TLS, xfreerdp's Connect-Initial), enough to log on,
    activate and ask for screen updates."""

    def __init__(self, port: int, user="john", password="secret", domain="", source: str | None = None):
        """`source`: a loopback address to connect from (127.0.0.2...), to stand for another client host."""
        self.port, self.user, self.password, self.domain = port, user, password, domain
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=10,
                                            source_address=(source, 0) if source else None)
        self.sock = self.raw
        self.reader = FrameReader(fastpath=True)
        self.user_id = None
        self.share_id = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes):
        self.sock.sendall(data)

    def frame(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the server")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLError, ConnectionError) as exc:
                raise Closed(str(exc)) from None
            if not data:
                raise Closed("connection closed")
            self.reader.feed(data)

    def indication(self, timeout=10.0):
        """The next Send Data Indication's payload on the I/O channel (skipping fast-path output)."""
        while True:
            frame = self.frame(timeout)
            if frame.kind is FrameKind.FASTPATH:
                continue
            pdu = mcs.parse_domain_pdu(x224.unwrap_data(frame.data))
            if isinstance(pdu, mcs.DisconnectProviderUltimatum):
                raise Closed("MCS disconnect provider ultimatum")
            return pdu.data

    def mcs(self, pdu):
        self.send(x224.wrap_data(mcs.build_domain_pdu(pdu)))

    def io(self, payload: bytes):
        self.mcs(mcs.SendDataRequest(self.user_id, mcs.IO_CHANNEL_ID, payload))

    def negotiate(self):
        request = x224.ConnectionRequest("tester", negotiation=x224.NegotiationRequest(x224.PROTOCOL_SSL))
        self.send(build_tpkt(x224.build_connection_request(request)))
        frame = self.frame()
        confirm = x224.parse_connection_confirm(parse_tpkt(frame.data))
        assert isinstance(confirm.result, x224.NegotiationResponse), confirm
        self.sock = tls_client_context().wrap_socket(self.raw, server_hostname=None)

    def logon(self):
        """Up to the Demand Active; raises Closed when the server turns the client away."""
        self.negotiate()
        self.send(XFREERDP_CONNECT_INITIAL)
        self.frame()  # Connect Response
        self.mcs(mcs.ErectDomainRequest())
        self.mcs(mcs.AttachUserRequest())
        attach = mcs.parse_domain_pdu(x224.unwrap_data(self.frame().data))
        self.user_id = attach.initiator
        for channel in (self.user_id, 1003, 1004, 1005, 1006, 1007):
            self.mcs(mcs.ChannelJoinRequest(self.user_id, channel))
            self.frame()
        client_info = info.ClientInfo(domain=self.domain, user_name=self.user, password=self.password)
        self.io(b"\x40\x00\x00\x00" + info.build_client_info(client_info))
        self.indication(timeout=30)  # licence (the answer waits for authentication)
        demand = capabilities.parse_demand_active(self.indication())
        self.share_id = demand.share_id
        return demand

    def activate(self):
        self.logon()
        self.io(capabilities.build_confirm_active(client_caps(32, True, 0xFFFF), self.share_id, self.user_id))
        self.indication()  # synchronize
        self.indication()  # cooperate
        self.io(activation.build_synchronize(1002, self.share_id, self.user_id))
        self.io(activation.build_control(activation.CTRLACTION_COOPERATE, 0, 0, self.share_id, self.user_id))
        self.io(activation.build_control(activation.CTRLACTION_REQUEST_CONTROL, 0, 0, self.share_id,
                                         self.user_id))
        self.indication()  # granted control
        self.io(activation.build_font_list(self.share_id, self.user_id))
        while share.parse_data_pdu(self.indication()).pdu_type2 != share.PDUTYPE2_FONTMAP:
            pass

    def refresh(self, x=0, y=0, w=64, h=64):
        payload = struct.pack("<B3xHHHH", 1, x, y, x + w - 1, y + h - 1)
        self.io(share.build_share_data(self.share_id, self.user_id, share.PDUTYPE2_REFRESH_RECT, payload))

    def graphics(self, timeout=5.0) -> int:
        """Bytes of fast-path output (bitmap updates) received within `timeout`."""
        received = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                frame = self.frame(max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                break
            if frame.kind is FrameKind.FASTPATH:
                received += len(frame.data)
                if received:
                    return received
        return received

    def closed_by_server(self, timeout=10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.frame(max(0.05, deadline - time.monotonic()))
            except Closed:
                return True
            except TimeoutError:
                return False
            except Exception:  # a decode error after a close_notify still means closed
                return True
        return False
