"""Unit tests of TPKT/fast-path framing and X.224 negotiation: MS-RDPBCGR 4.1.1/4.1.2 and real client bytes.

XFREERDP_*/RDESKTOP*_* were captured on loopback from xfreerdp 2.11.7 and rdesktop 1.9.0 (Debian 12)."""


import pytest

from services.vrdp import tpkt, x224
from services.vrdp.tpkt import FrameKind, FrameReader, ProtocolError
from tests.support.rdp_fuzz import mutations

# MS-RDPBCGR 4.1.1: cookie "eltons", RDP_NEG_REQ asking for PROTOCOL_RDP.
SPEC_CONNECTION_REQUEST = bytes.fromhex(
    "0300002c27e00000000000436f6f6b69653a206d737473686173683d656c746f6e730d0a0100080000000000")
# MS-RDPBCGR 4.1.2: RDP_NEG_RSP selecting PROTOCOL_RDP.
SPEC_CONNECTION_CONFIRM = bytes.fromhex("030000130ed000001234000200080000000000")

# xfreerdp default: HYBRID|SSL. rdesktop asks for SSL|HYBRID too; rdesktop -4 sends no RDP_NEG_REQ.
XFREERDP_CONNECTION_REQUEST = bytes.fromhex(
    "0300002c27e00000000000436f6f6b69653a206d737473686173683d7465737465720d0a0100080003000000")
RDESKTOP4_CONNECTION_REQUEST = bytes.fromhex(
    "030000241fe00000000000436f6f6b69653a206d737473686173683d7465737465720d0a")


# ---------------------------------------------------------------- TPKT and fast-path


def test_tpkt_round_trip():
    frame = tpkt.build_tpkt(b"\x02\xf0\x80\x28")
    assert frame == bytes.fromhex("0300000802f08028")
    assert tpkt.parse_tpkt(frame) == b"\x02\xf0\x80\x28"


def test_tpkt_rejects_length_mismatch():
    with pytest.raises(ProtocolError):
        tpkt.parse_tpkt(bytes.fromhex("0300000902f08028"))


def test_frame_reader_splits_byte_by_byte():
    stream = SPEC_CONNECTION_REQUEST + tpkt.build_tpkt(b"\x02\xf0\x80\x28")
    reader = FrameReader()
    frames = []
    for byte in stream:
        reader.feed(bytes((byte,)))
        frames.extend(reader)
    assert [frame.data for frame in frames] == [SPEC_CONNECTION_REQUEST, tpkt.build_tpkt(b"\x02\xf0\x80\x28")]
    assert all(frame.kind is FrameKind.TPKT for frame in frames)
    assert reader.buffered == 0


def test_frame_reader_fast_path_both_length_forms():
    short = bytes((0x04, 0x06, 0x01, 0x0F, 0x20, 0x00))  # one scancode event, 1-byte length
    long = tpkt.build_fastpath(b"\xaa" * 200, num_events=1)
    reader = FrameReader(fastpath=True)
    reader.feed(short + long + SPEC_CONNECTION_CONFIRM)
    frames = list(reader)
    assert [(f.kind, f.data) for f in frames] == [
        (FrameKind.FASTPATH, short), (FrameKind.FASTPATH, long), (FrameKind.TPKT, SPEC_CONNECTION_CONFIRM)]
    header = tpkt.parse_fastpath_header(long)
    assert (header.action, header.num_events, header.flags, header.length, header.header_size) == (0, 1, 0, 203, 3)
    assert tpkt.parse_fastpath_header(short).num_events == 1
    assert tpkt.parse_fastpath_header(short).header_size == 2


def test_frame_reader_encrypted_fast_path_flags():
    frame = tpkt.build_fastpath(b"\x00" * 12, flags=tpkt.FASTPATH_FLAG_ENCRYPTED)
    assert frame[0] == 0x80
    assert tpkt.parse_fastpath_header(frame).flags == tpkt.FASTPATH_FLAG_ENCRYPTED


@pytest.mark.parametrize("stream", [
    bytes.fromhex("03000003"),  # shorter than a TPKT header plus an X.224 header
    bytes.fromhex("03000000"),
    bytes.fromhex("0400"),  # fast-path byte before the data phase
    bytes.fromhex("16030100"),  # a TLS ClientHello where TPKT was due
])
def test_frame_reader_rejects(stream):
    reader = FrameReader()
    reader.feed(stream)
    with pytest.raises(ProtocolError):
        reader.next_frame()


def test_frame_reader_rejects_fast_path_length_below_header():
    reader = FrameReader(fastpath=True)
    reader.feed(bytes((0x04, 0x80, 0x02)))
    with pytest.raises(ProtocolError):
        reader.next_frame()


def test_frame_reader_hands_over_tls_bytes():
    reader = FrameReader()
    reader.feed(XFREERDP_CONNECTION_REQUEST + b"\x16\x03\x01\x02\x00")
    assert reader.next_frame().data == XFREERDP_CONNECTION_REQUEST
    assert reader.take_buffered() == b"\x16\x03\x01\x02\x00"
    assert reader.next_frame() is None


def test_frame_reader_fuzz_raises_only_protocol_error():
    seeds = [SPEC_CONNECTION_REQUEST + tpkt.build_fastpath(b"\x01\x02\x03"), XFREERDP_CONNECTION_REQUEST]
    for data in mutations(seeds, 20000):
        reader = FrameReader(fastpath=True)
        try:
            for chunk in (data[:7], data[7:]):
                reader.feed(chunk)
                for frame in reader:
                    if frame.kind is FrameKind.TPKT:
                        tpkt.parse_tpkt(frame.data)
                    else:
                        tpkt.parse_fastpath_header(frame.data)
        except ProtocolError:
            pass


# ---------------------------------------------------------------- X.224


def test_spec_connection_request():
    request = x224.parse_connection_request(tpkt.parse_tpkt(SPEC_CONNECTION_REQUEST))
    assert request.cookie == "eltons"
    assert request.routing_token is None
    assert request.negotiation == x224.NegotiationRequest(x224.PROTOCOL_RDP, 0)
    assert tpkt.build_tpkt(x224.build_connection_request(request)) == SPEC_CONNECTION_REQUEST


def test_spec_connection_confirm_is_built_byte_exact():
    confirm = x224.ConnectionConfirm(x224.NegotiationResponse(x224.PROTOCOL_RDP, flags=0))
    assert tpkt.build_tpkt(x224.build_connection_confirm(confirm)) == SPEC_CONNECTION_CONFIRM
    assert x224.parse_connection_confirm(tpkt.parse_tpkt(SPEC_CONNECTION_CONFIRM)) == confirm


def test_xfreerdp_connection_request():
    request = x224.parse_connection_request(tpkt.parse_tpkt(XFREERDP_CONNECTION_REQUEST))
    assert request.cookie == "tester"
    assert request.requested_protocols == x224.PROTOCOL_SSL | x224.PROTOCOL_HYBRID
    assert tpkt.build_tpkt(x224.build_connection_request(request)) == XFREERDP_CONNECTION_REQUEST


def test_rdesktop_rdp4_request_has_no_negotiation():
    request = x224.parse_connection_request(tpkt.parse_tpkt(RDESKTOP4_CONNECTION_REQUEST))
    assert request.cookie == "tester"
    assert request.negotiation is None
    assert request.requested_protocols == x224.PROTOCOL_RDP
    # The answer to such a client is the 11-byte confirm without negotiation data (FreeRDP: li == 6).
    confirm = tpkt.build_tpkt(x224.build_connection_confirm(x224.ConnectionConfirm(None)))
    assert confirm == bytes.fromhex("0300000b06d00000123400")
    assert x224.parse_connection_confirm(tpkt.parse_tpkt(confirm)).result is None


def test_routing_token_and_correlation_info():
    correlation = bytes(range(1, 17))
    request = x224.ConnectionRequest(
        routing_token=b"Cookie: msts=3640205228.15629.0000\r\n",
        negotiation=x224.NegotiationRequest(x224.PROTOCOL_SSL | x224.PROTOCOL_HYBRID | x224.PROTOCOL_HYBRID_EX,
                                            x224.CORRELATION_INFO_PRESENT, correlation))
    tpdu = x224.build_connection_request(request)
    assert tpdu[0] == len(tpdu) - 1
    assert x224.parse_connection_request(tpdu) == request


def test_request_without_cookie():
    tpdu = x224.build_connection_request(x224.ConnectionRequest(negotiation=x224.NegotiationRequest(1)))
    assert tpdu == bytes.fromhex("0ee000000000000100080001000000")
    assert x224.parse_connection_request(tpdu).requested_protocols == x224.PROTOCOL_SSL


def test_negotiation_response_and_failure():
    response = x224.build_connection_confirm(x224.ConnectionConfirm(x224.NegotiationResponse(
        x224.PROTOCOL_SSL, x224.EXTENDED_CLIENT_DATA_SUPPORTED)))
    assert response == bytes.fromhex("0ed000001234000201080001000000")
    failure = x224.build_connection_confirm(x224.ConnectionConfirm(
        x224.NegotiationFailure(x224.SSL_REQUIRED_BY_SERVER)))
    assert failure == bytes.fromhex("0ed000001234000300080001000000")
    assert x224.parse_connection_confirm(failure).result == x224.NegotiationFailure(1)


def test_data_tpdu():
    frame = x224.wrap_data(b"\x28")
    assert frame == bytes.fromhex("0300000802f08028")
    assert x224.unwrap_data(frame) == b"\x28"
    assert x224.tpdu_code(tpkt.parse_tpkt(frame)) == x224.TPDU_DATA
    with pytest.raises(ProtocolError):
        x224.parse_data(bytes.fromhex("0ee000"))


@pytest.mark.parametrize("tpdu", [
    bytes.fromhex("06e0000000"),  # truncated fixed header
    bytes.fromhex("27e00000000000436f6f6b69653a"),  # LI beyond the data
    bytes.fromhex("10e00000000000436f6f6b69653a206d737473"),  # cookie without CRLF
    bytes.fromhex("0ee000000000000200080003000000"),  # RDP_NEG_RSP where a request belongs
    bytes.fromhex("0ee000000000000100090003000000"),  # wrong RDP_NEG_REQ length
    bytes.fromhex("0ae0000000000001000800"),  # truncated RDP_NEG_REQ
    bytes.fromhex("0ed000001234000201080000000000"),  # a confirm is not a request
])
def test_malformed_connection_request(tpdu):
    with pytest.raises(ProtocolError):
        x224.parse_connection_request(tpdu)


def test_x224_fuzz_raises_only_protocol_error():
    seeds = [tpkt.parse_tpkt(frame) for frame in (SPEC_CONNECTION_REQUEST, XFREERDP_CONNECTION_REQUEST,
                                                 RDESKTOP4_CONNECTION_REQUEST, SPEC_CONNECTION_CONFIRM)]
    seeds.append(x224.build_connection_request(x224.ConnectionRequest(
        "x", None, x224.NegotiationRequest(11, x224.CORRELATION_INFO_PRESENT, bytes(16)))))
    for data in mutations(seeds, 20000, seed=2):
        for parser in (x224.parse_connection_request, x224.parse_connection_confirm, x224.parse_data,
                       x224.tpdu_code):
            try:
                parser(data)
            except ProtocolError:
                pass
