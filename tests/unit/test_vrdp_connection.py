"""The RDP acceptor state machine driven by a scripted client (xfreerdp's captured Connect-Initial, a real
TLS client over memory BIOs) through activation, input and bitmap output; fuzzed at every phase."""

import random
import ssl

import numpy as np
import pytest

from services.vrdp import connection as rdp
from services.vrdp import gcc, mcs, tls, x224
from services.vrdp.connection import Connection, ConnectionConfig, State
from services.vrdp.pdu import activation, capabilities, info, output, share
from services.vrdp.pdu import input as rdp_input
from services.vrdp.tpkt import (
    FrameKind,
    FrameReader,
    ProtocolError,
    build_tpkt,
    parse_tpkt,
)
from tests.support.rdp_client_side import client_caps, frame_pattern, paint
from tests.support.rdp_fuzz import mutations
from tests.support.rdp_test_client import tls_client_context
from tests.support.rdp_vectors import XFREERDP_CONNECT_INITIAL


@pytest.fixture(scope="module")
def server_context(tmp_path_factory):
    credentials = tls.ensure_self_signed(tmp_path_factory.mktemp("vrdp-state"), "vmhost.example")
    return tls.create_server_context(credentials)


class Client:
    """Plays an RDP client against a Connection: bytes go straight into receive(), replies are
    decrypted and split into frames as the client's own stack would."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.events = []
        self.reader = FrameReader(fastpath=True)
        self.tls = None
        self.user_id = None

    def raw(self, data: bytes) -> bytes:
        self.events += self.conn.receive(data)
        return self.conn.data_to_send()

    def negotiate(self, protocols=x224.PROTOCOL_SSL | x224.PROTOCOL_HYBRID):
        request = x224.ConnectionRequest("tester", negotiation=x224.NegotiationRequest(protocols))
        reply = self.raw(build_tpkt(x224.build_connection_request(request)))
        return x224.parse_connection_confirm(parse_tpkt(reply))

    def handshake(self):
        self.c_in, self.c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = tls_client_context().wrap_bio(self.c_in, self.c_out, server_side=False)
        for _ in range(10):
            try:
                self.tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            self.c_in.write(self.raw(self.c_out.read()))
            if done and self.conn.state is State.CONNECT_INITIAL:
                return
        raise AssertionError("TLS handshake did not finish")

    def send(self, data: bytes) -> list:
        """Plaintext in, the server's reply frames out (decrypted)."""
        if data:
            self.tls.write(data)
            self.c_in.write(self.raw(self.c_out.read()))
        frames = []
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            self.reader.feed(chunk)
        frames.extend(self.reader)
        return frames

    def flush(self) -> list:
        """Frames the server produced outside receive() (bitmap output)."""
        self.c_in.write(self.conn.data_to_send())
        return self.send(b"")

    def mcs(self, pdu) -> list:
        return self.send(x224.wrap_data(mcs.build_domain_pdu(pdu)))

    def io(self, payload: bytes) -> list:
        return self.mcs(mcs.SendDataRequest(self.user_id, mcs.IO_CHANNEL_ID, payload))


def indications(frames):
    """The Send Data Indication payloads of a list of TPKT frames."""
    out = []
    for frame in frames:
        assert frame.kind is FrameKind.TPKT
        pdu = mcs.parse_domain_pdu(x224.unwrap_data(frame.data))
        assert isinstance(pdu, mcs.SendDataIndication) and pdu.channel_id == mcs.IO_CHANNEL_ID
        assert pdu.initiator == rdp.SERVER_USER_ID
        out.append(pdu.data)
    return out


def connect_to_demand_active(conn, connect_initial=XFREERDP_CONNECT_INITIAL):
    client = Client(conn)
    confirm = client.negotiate()
    assert confirm.result == x224.NegotiationResponse(x224.PROTOCOL_SSL, x224.EXTENDED_CLIENT_DATA_SUPPORTED)
    client.handshake()
    [frame] = client.send(connect_initial)
    response = mcs.parse_connect_response(x224.unwrap_data(frame.data))
    server = gcc.parse_conference_create_response(response.user_data)
    assert server.core.client_requested_protocols == x224.PROTOCOL_SSL | x224.PROTOCOL_HYBRID
    assert server.network.io_channel_id == 1003
    assert server.network.channel_ids == (1004, 1005, 1006, 1007)
    assert client.mcs(mcs.ErectDomainRequest()) == []
    [frame] = client.mcs(mcs.AttachUserRequest())
    attach = mcs.parse_domain_pdu(x224.unwrap_data(frame.data))
    # 1004 + 4 static channels: the user channel collides with none of them.
    assert attach == mcs.AttachUserConfirm(mcs.RESULT_SUCCESSFUL, 1008)
    client.user_id = attach.initiator
    for channel in (1008, 1003, 1004, 1005, 1006, 1007):
        [frame] = client.mcs(mcs.ChannelJoinRequest(client.user_id, channel))
        assert mcs.parse_domain_pdu(x224.unwrap_data(frame.data)) == mcs.ChannelJoinConfirm(
            mcs.RESULT_SUCCESSFUL, 1008, channel, channel)
    assert conn.state is State.CLIENT_INFO
    client_info = info.ClientInfo(domain="@2", user_name="alice", password="secret",
                                  extended=info.ExtendedInfo(client_address="127.0.0.1"))
    licence, demand = indications(client.io(b"\x40\x00\x00\x00" + info.build_client_info(client_info)))
    assert licence == info.build_license_valid_client()
    assert client.events[-1] == rdp.ClientInfoReceived("alice", "secret", "@2", "vm")
    return client, capabilities.parse_demand_active(demand)


def activate(conn, bpp=32, fastpath=True, multifragment=0xFFFF):
    client, demand = connect_to_demand_active(conn)
    sync, cooperate = indications(client.io(capabilities.build_confirm_active(
        client_caps(bpp, fastpath, multifragment), demand.share_id, client.user_id)))
    assert activation.parse_synchronize(share.parse_data_pdu(sync).payload).target_user == client.user_id
    assert activation.parse_control(share.parse_data_pdu(cooperate).payload).action == \
        activation.CTRLACTION_COOPERATE
    assert client.io(activation.build_synchronize(1002, demand.share_id, client.user_id)) == []
    assert client.io(activation.build_control(activation.CTRLACTION_COOPERATE, 0, 0, demand.share_id,
                                              client.user_id)) == []
    [granted] = indications(client.io(activation.build_control(
        activation.CTRLACTION_REQUEST_CONTROL, 0, 0, demand.share_id, client.user_id)))
    assert activation.parse_control(share.parse_data_pdu(granted).payload) == activation.Control(
        activation.CTRLACTION_GRANTED_CONTROL, client.user_id, 0x03EA)
    [font_map] = indications(client.io(activation.build_font_list(demand.share_id, client.user_id)))
    assert share.parse_data_pdu(font_map).pdu_type2 == share.PDUTYPE2_FONTMAP
    assert conn.state is State.ACTIVE
    return client, demand


def test_demand_active_takes_the_client_size_and_32_bpp(server_context):
    conn = Connection(ConnectionConfig(server_context))
    _, demand = connect_to_demand_active(conn)
    bitmap = next(s for s in demand.capability_sets if s.cap_type == capabilities.CAPSTYPE_BITMAP)
    caps = capabilities.client_capabilities([bitmap])
    assert (caps.bpp, caps.desktop_width, caps.desktop_height) == (32, 1024, 768)
    general = next(s for s in demand.capability_sets if s.cap_type == capabilities.CAPSTYPE_GENERAL)
    assert capabilities.client_capabilities([general]).extra_flags != 0


def test_desktop_size_from_the_owner(server_context):
    conn = Connection(ConnectionConfig(server_context, desktop_size=lambda: (720, 400), max_bpp=24))
    _, demand = connect_to_demand_active(conn)
    caps = capabilities.client_capabilities(demand.capability_sets)
    assert (caps.bpp, caps.desktop_width, caps.desktop_height) == (24, 720, 400)


def test_full_activation_emits_activated(server_context):
    conn = Connection(ConnectionConfig(server_context, desktop_size=lambda: (720, 400)))
    client, _ = activate(conn)
    assert client.events[-1] == rdp.Activated(720, 400, 32)


def test_refuses_a_client_without_tls():
    conn = Connection(ConnectionConfig(None))
    client = Client(conn)
    confirm = client.negotiate(x224.PROTOCOL_RDP)
    assert confirm.result == x224.NegotiationFailure(x224.SSL_REQUIRED_BY_SERVER)
    assert client.events == [rdp.Refused(0, x224.SSL_REQUIRED_BY_SERVER)]
    assert conn.closed


def decode_fastpath(frames, bpp, canvas):
    pending = b""
    for frame in frames:
        assert frame.kind is FrameKind.FASTPATH
        for update in output.parse_fastpath_updates(frame.data[3:]):
            assert update.code == output.FASTPATH_UPDATETYPE_BITMAP
            pending += update.data
            if update.fragmentation in (output.FASTPATH_FRAGMENT_SINGLE, output.FASTPATH_FRAGMENT_LAST):
                for rect in output.parse_bitmap_update_data(pending):
                    paint(canvas, rect, bpp)
                pending = b""
    assert pending == b""


@pytest.mark.parametrize("bpp", [32, 24, 16])
def test_bitmap_update_reproduces_the_frame(server_context, bpp):
    from services.vrdp.codecs import convert
    conn = Connection(ConnectionConfig(server_context, desktop_size=lambda: (720, 400)))
    client, _ = activate(conn, bpp=bpp)
    frame = frame_pattern(400, 720)
    conn.send_bitmaps(frame, [(0, 0, 720, 400)])
    frames = client.flush()
    canvas = np.zeros((400, 720, 3), np.uint8)
    decode_fastpath(frames, bpp, canvas)
    assert (canvas == convert.quantise(frame, bpp)[..., :3]).all()
    assert all(len(f.data) <= output.FASTPATH_MAX_PDU for f in frames)


def test_slow_path_output_for_clients_without_fastpath(server_context):
    conn = Connection(ConnectionConfig(server_context, desktop_size=lambda: (720, 400)))
    client, _ = activate(conn, bpp=32, fastpath=False, multifragment=0)
    frame = frame_pattern(400, 720)
    conn.send_bitmaps(frame, [(10, 20, 100, 90)])
    canvas = np.zeros((400, 720, 3), np.uint8)
    for payload in indications(client.flush()):
        pdu = share.parse_data_pdu(payload)
        assert pdu.pdu_type2 == share.PDUTYPE2_UPDATE
        for rect in output.parse_bitmap_update_data(pdu.payload):
            paint(canvas, rect, 32)
    assert (canvas[20:110, 10:110] == frame[20:110, 10:110, :3]).all()
    assert not canvas[:20].any() and not canvas[:, :10].any()


def test_input_slow_and_fast_path(server_context):
    conn = Connection(ConnectionConfig(server_context))
    client, demand = activate(conn)
    events = [rdp_input.KeyboardEvent(0x1E), rdp_input.KeyboardEvent(0x48, release=True, extended=True),
              rdp_input.MouseEvent(rdp_input.PTR_FLAGS_MOVE, 100, 50)]
    client.events.clear()
    client.io(share.build_share_data(demand.share_id, client.user_id, share.PDUTYPE2_INPUT,
                                     rdp_input.build_input_pdu(events)))
    assert client.events == events
    client.events.clear()
    client.tls.write(rdp_input.build_fastpath_input(events))
    client.raw(client.c_out.read())
    assert client.events == events


def test_refresh_rect_and_shutdown(server_context):
    conn = Connection(ConnectionConfig(server_context))
    client, demand = activate(conn)
    client.events.clear()
    client.io(share.build_share_data(demand.share_id, client.user_id, share.PDUTYPE2_REFRESH_RECT,
                                     bytes((1, 0, 0, 0)) + bytes.fromhex("0a00 1400 1300 1d00")))
    assert client.events == [rdp.RefreshRequested(((10, 20, 10, 10),))]
    client.io(share.build_share_data(demand.share_id, client.user_id, share.PDUTYPE2_SHUTDOWN_REQUEST, b""))
    assert isinstance(client.events[-1], rdp.Disconnected) and conn.closed


def test_resize_deactivates_and_reactivates(server_context):
    conn = Connection(ConnectionConfig(server_context, desktop_size=lambda: (720, 400)))
    client, demand = activate(conn)
    conn.resize(1024, 768)
    deactivate, demand_again = indications(client.flush())
    assert share.parse_share_control(deactivate).pdu_type == share.PDUTYPE_DEACTIVATEALLPDU
    caps = capabilities.client_capabilities(capabilities.parse_demand_active(demand_again).capability_sets)
    assert (caps.desktop_width, caps.desktop_height) == (1024, 768)
    assert conn.state is State.CONFIRM_ACTIVE
    conn.send_bitmaps(frame_pattern(768, 1024), [(0, 0, 64, 64)])  # nothing while not active
    assert conn.data_to_send() == b""
    client.io(capabilities.build_confirm_active(client_caps(), demand.share_id, client.user_id))
    client.io(activation.build_control(activation.CTRLACTION_REQUEST_CONTROL, 0, 0, demand.share_id,
                                       client.user_id))
    client.io(activation.build_font_list(demand.share_id, client.user_id))
    assert client.events[-1] == rdp.Activated(1024, 768, 32)


# --- fuzzing: whatever a client sends, the acceptor raises ProtocolError and nothing else -------------

def fuzz_phase(server_context, prepare, seeds, count=150):
    for index, data in enumerate(mutations(seeds, count, seed=len(seeds[0]))):
        conn = Connection(ConnectionConfig(server_context))
        client = prepare(conn)
        try:
            if client.tls is None:
                client.raw(data)
            else:
                client.send(data)
        except ProtocolError:
            assert conn.closed
        with pytest.raises(ProtocolError):  # once failed (or not), a closed connection stays closed
            if conn.closed:
                conn.receive(b"x")
            else:
                raise ProtocolError("still open")


def test_fuzz_connection_request(server_context):
    seeds = [build_tpkt(x224.build_connection_request(x224.ConnectionRequest(
        "tester", negotiation=x224.NegotiationRequest(x224.PROTOCOL_SSL))))]
    fuzz_phase(server_context, Client, seeds)


def test_fuzz_tls_handshake_bytes(server_context):
    def prepare(conn):
        client = Client(conn)
        client.negotiate()
        return client
    fuzz_phase(server_context, prepare, [bytes.fromhex("16030100c4010000c00303") + bytes(180)])


def test_fuzz_connect_initial(server_context):
    def prepare(conn):
        client = Client(conn)
        client.negotiate()
        client.handshake()
        return client
    fuzz_phase(server_context, prepare, [XFREERDP_CONNECT_INITIAL], count=300)


def test_fuzz_domain_pdus_and_client_info(server_context):
    def prepare(conn):
        client = Client(conn)
        client.negotiate()
        client.handshake()
        client.send(XFREERDP_CONNECT_INITIAL)
        client.user_id = 1008
        return client
    seeds = [x224.wrap_data(mcs.build_domain_pdu(pdu)) for pdu in (
        mcs.ErectDomainRequest(), mcs.AttachUserRequest(), mcs.ChannelJoinRequest(1008, 1003),
        mcs.SendDataRequest(1008, 1003, b"\x40\x00\x00\x00" + info.build_client_info(info.ClientInfo())))]
    fuzz_phase(server_context, prepare, seeds, count=300)


def test_fuzz_confirm_active_finalization_and_input(server_context):
    random.seed(3)
    share_id = share.DEFAULT_SHARE_ID

    def prepare(conn):
        client, _ = connect_to_demand_active(conn)
        return client

    def io(payload):
        return x224.wrap_data(mcs.build_domain_pdu(mcs.SendDataRequest(1008, 1003, payload)))
    seeds = [io(capabilities.build_confirm_active(client_caps(), share_id, 1008)),
             io(activation.build_font_list(share_id, 1008)),
             io(share.build_share_data(share_id, 1008, share.PDUTYPE2_INPUT,
                                       rdp_input.build_input_pdu([rdp_input.KeyboardEvent(0x1E)])))]
    fuzz_phase(server_context, prepare, seeds, count=200)


def test_fuzz_active_phase(server_context):
    def prepare(conn):
        client, _ = activate(conn)
        return client
    events = [rdp_input.KeyboardEvent(0x1E), rdp_input.MouseEvent(rdp_input.PTR_FLAGS_MOVE, 1, 2)]
    seeds = [rdp_input.build_fastpath_input(events),
             x224.wrap_data(mcs.build_domain_pdu(mcs.SendDataRequest(1008, 1003, share.build_share_data(
                 share.DEFAULT_SHARE_ID, 1008, share.PDUTYPE2_INPUT, rdp_input.build_input_pdu(events)))))]
    fuzz_phase(server_context, prepare, seeds, count=150)
