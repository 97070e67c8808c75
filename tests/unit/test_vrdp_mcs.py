"""Unit tests of MCS (T.125): BER Connect-Initial/Response and PER domain PDUs, MS-RDPBCGR 4.1.3-4.1.8.

SPEC_* are MS-RDPBCGR 4.1 examples retyped from their field tables (see test_vrdp_gcc.py for the caveat on
the server random and certificate); XFREERDP_*/RDESKTOP* were captured on loopback from xfreerdp 2.11.7 and
rdesktop 1.9.0 (Debian 12) talking to a listener built on these codecs."""


import pytest

from services.vrdp import mcs, x224
from services.vrdp.mcs import (
    AttachUserConfirm,
    AttachUserRequest,
    ChannelJoinConfirm,
    ChannelJoinRequest,
    DisconnectProviderUltimatum,
    DomainParameters,
    ErectDomainRequest,
    SendDataIndication,
    SendDataRequest,
)
from services.vrdp.tpkt import ProtocolError
from tests.support.rdp_fuzz import mutations
from tests.support.rdp_vectors import (
    RDESKTOP4_CONNECT_INITIAL,
    RDESKTOP_CONNECT_INITIAL,
    SPEC_CONNECT_INITIAL,
    SPEC_CONNECT_RESPONSE,
    XFREERDP_CONNECT_INITIAL,
)

XFREERDP_CLIENT_INFO_SEND_DATA = bytes.fromhex(
    "0300014b02f08064000603eb70813c4000000000000000f3470b0000000c000000000000000000740065007300740065"
    "0072000000000000000000020014003100320037002e0030002e0030002e0031000000400043003a005c00570069006e"
    "0064006f00770073005c00530079007300740065006d00330032005c006d007300740073006300610078002e0064006c"
    "006c0000000000000043006f006f007200640069006e006100740065006400200055006e006900760065007200730061"
    "006c002000540069006d006500000000000000000000000000000000000000000000000000000000000000000043006f"
    "006f007200640069006e006100740065006400200055006e006900760065007200730061006c002000540069006d0065"
    "00000000000000000000000000000000000000000000000000000000000000000000000000800100000000"
)

# The PER domain PDUs of MS-RDPBCGR 4.1.5-4.1.8; xfreerdp sends and accepts exactly these bytes.
SPEC_ERECT_DOMAIN_REQUEST = bytes.fromhex("0300000c02f0800401000100")
RDESKTOP_ERECT_DOMAIN_REQUEST = bytes.fromhex("0300000c02f0800400010001")  # two plain words, not PER
SPEC_ATTACH_USER_REQUEST = bytes.fromhex("0300000802f08028")
SPEC_ATTACH_USER_CONFIRM = bytes.fromhex("0300000b02f0802e000006")
SPEC_CHANNEL_JOIN_REQUEST = bytes.fromhex("0300000c02f08038000603eb")
SPEC_CHANNEL_JOIN_CONFIRM = bytes.fromhex("0300000f02f0803e00000603eb03eb")
# rdesktop's Security Exchange header: a 16-byte payload with the PER length in its 2-byte form.
RDESKTOP_SEND_DATA_REQUEST = bytes.fromhex("0300001f02f08064000603eb70801001000000080000000000000000000000")

SPEC_TARGET = DomainParameters(34, 2, 0, 1, 0, 1, 0xFFFF, 2)
SPEC_MINIMUM = DomainParameters(1, 1, 1, 1, 0, 1, 0x420, 2)
SPEC_MAXIMUM = DomainParameters(0xFFFF, 0xFC17, 0xFFFF, 1, 0, 1, 0xFFFF, 2)
SPEC_NEGOTIATED = DomainParameters(34, 3, 0, 1, 0, 1, 65528, 2)


def test_spec_connect_initial():
    initial = mcs.parse_connect_initial(x224.unwrap_data(SPEC_CONNECT_INITIAL))
    assert initial.calling_domain_selector == b"\x01" and initial.called_domain_selector == b"\x01"
    assert initial.upward_flag
    assert (initial.target_parameters, initial.minimum_parameters, initial.maximum_parameters) == (
        SPEC_TARGET, SPEC_MINIMUM, SPEC_MAXIMUM)
    assert len(initial.user_data) == 0x133
    assert initial.user_data.startswith(bytes.fromhex("000500147c0001812a"))
    # Windows writes 65535 as 02 02 FF FF; the builder writes the canonical 02 03 00 FF FF as FreeRDP does.
    assert mcs.parse_connect_initial(mcs.build_connect_initial(initial)) == initial


def test_spec_connect_response_is_built_byte_exact():
    response = mcs.parse_connect_response(x224.unwrap_data(SPEC_CONNECT_RESPONSE))
    assert response.result == mcs.RESULT_SUCCESSFUL and response.called_connect_id == 0
    assert response.domain_parameters == SPEC_NEGOTIATED
    assert x224.wrap_data(mcs.build_connect_response(response)) == SPEC_CONNECT_RESPONSE


def test_merge_domain_parameters_gives_the_windows_answer():
    assert mcs.merge_domain_parameters(SPEC_TARGET, SPEC_MINIMUM, SPEC_MAXIMUM) == SPEC_NEGOTIATED
    for frame in (XFREERDP_CONNECT_INITIAL, RDESKTOP_CONNECT_INITIAL):
        initial = mcs.parse_connect_initial(x224.unwrap_data(frame))
        merged = mcs.merge_domain_parameters(initial.target_parameters, initial.minimum_parameters,
                                             initial.maximum_parameters)
        assert merged == SPEC_NEGOTIATED


def test_merge_domain_parameters_refuses_unusable_ranges():
    with pytest.raises(ProtocolError):
        mcs.merge_domain_parameters(DomainParameters(2, 2, 0, 1, 0, 1, 65535, 2), SPEC_MINIMUM,
                                    DomainParameters(3, 3, 0, 1, 0, 1, 65535, 2))
    with pytest.raises(ProtocolError):
        mcs.merge_domain_parameters(DomainParameters(34, 2, 0, 1, 0, 1, 65535, 3),
                                    DomainParameters(1, 1, 1, 1, 0, 1, 0x420, 3),
                                    DomainParameters(0xFFFF, 0xFC17, 0xFFFF, 1, 0, 1, 0xFFFF, 3))


def test_captured_connect_initials():
    xfreerdp = mcs.parse_connect_initial(x224.unwrap_data(XFREERDP_CONNECT_INITIAL))
    # FreeRDP encodes BER integers canonically, so its PDU rebuilds byte for byte.
    assert x224.wrap_data(mcs.build_connect_initial(xfreerdp)) == XFREERDP_CONNECT_INITIAL
    rdesktop = mcs.parse_connect_initial(x224.unwrap_data(RDESKTOP_CONNECT_INITIAL))
    assert rdesktop.target_parameters == SPEC_TARGET  # written with 2-byte integers (02 02 00 22)
    rdp4 = mcs.parse_connect_initial(x224.unwrap_data(RDESKTOP4_CONNECT_INITIAL))
    assert rdp4.user_data.startswith(bytes.fromhex("000500147c0001"))


def test_connect_response_short_lengths():
    response = mcs.ConnectResponse(SPEC_NEGOTIATED, b"\x55" * 0x30)
    data = mcs.build_connect_response(response)
    assert data[:3] == bytes.fromhex("7f6654")  # short BER length form below 0x80
    assert mcs.parse_connect_response(data) == response


@pytest.mark.parametrize("frame, pdu", [
    (SPEC_ERECT_DOMAIN_REQUEST, ErectDomainRequest(0, 0)),
    (SPEC_ATTACH_USER_REQUEST, AttachUserRequest()),
    (SPEC_ATTACH_USER_CONFIRM, AttachUserConfirm(mcs.RESULT_SUCCESSFUL, 1007)),
    (SPEC_CHANNEL_JOIN_REQUEST, ChannelJoinRequest(1007, 1003)),
    (SPEC_CHANNEL_JOIN_CONFIRM, ChannelJoinConfirm(mcs.RESULT_SUCCESSFUL, 1007, 1003, 1003)),
    (x224.wrap_data(bytes.fromhex("2180")), DisconnectProviderUltimatum(mcs.REASON_USER_REQUESTED)),
    (x224.wrap_data(bytes.fromhex("2080")), DisconnectProviderUltimatum(mcs.REASON_PROVIDER_INITIATED)),
])
def test_domain_pdus_byte_exact(frame, pdu):
    assert mcs.parse_domain_pdu(x224.unwrap_data(frame)) == pdu
    assert x224.wrap_data(mcs.build_domain_pdu(pdu)) == frame


def test_rdesktop_erect_domain_request_is_accepted():
    assert mcs.parse_domain_pdu(x224.unwrap_data(RDESKTOP_ERECT_DOMAIN_REQUEST)) == ErectDomainRequest(1, 1)


def test_failed_confirms_omit_the_optional_fields():
    attach = AttachUserConfirm(mcs.RESULT_TOO_MANY_USERS, None)
    assert mcs.build_domain_pdu(attach) == bytes.fromhex("2c0d")
    assert mcs.parse_domain_pdu(bytes.fromhex("2c0d")) == attach
    join = ChannelJoinConfirm(mcs.RESULT_NO_SUCH_CHANNEL, 1007, 1010, None)
    assert mcs.build_domain_pdu(join) == bytes.fromhex("3c03000603f2")
    assert mcs.parse_domain_pdu(bytes.fromhex("3c03000603f2")) == join


def test_send_data_request_and_indication():
    request = mcs.parse_domain_pdu(x224.unwrap_data(RDESKTOP_SEND_DATA_REQUEST))
    assert request == SendDataRequest(1007, 1003, bytes.fromhex("01000000080000000000000000000000"))
    client_info = mcs.parse_domain_pdu(x224.unwrap_data(XFREERDP_CLIENT_INFO_SEND_DATA))
    assert isinstance(client_info, SendDataRequest)
    assert (client_info.initiator, client_info.channel_id, len(client_info.data)) == (1007, 1003, 0x13C)
    assert x224.wrap_data(mcs.build_domain_pdu(client_info)) == XFREERDP_CLIENT_INFO_SEND_DATA
    indication = SendDataIndication(1002, 1003, b"\x07" * 0x1234)
    data = mcs.build_domain_pdu(indication)
    assert data[:8] == bytes.fromhex("680001 03eb 70 9234".replace(" ", ""))
    assert mcs.parse_domain_pdu(data) == indication
    short = mcs.build_domain_pdu(SendDataIndication(1002, 1004, b"ab", mcs.PRIORITY_LOW, mcs.SEGMENTATION_BEGIN))
    assert short == bytes.fromhex("68000103ece0026162")


def test_domain_pdu_build_rejects_out_of_range_values():
    with pytest.raises(ValueError):
        mcs.build_domain_pdu(ChannelJoinRequest(1000, 1003))
    with pytest.raises(ValueError):
        mcs.build_domain_pdu(SendDataIndication(1002, 1003, bytes(0x4000)))


@pytest.mark.parametrize("data", [
    b"", bytes.fromhex("2e00"), bytes.fromhex("3800"), bytes.fromhex("64000603eb7005aa"),
    bytes.fromhex("64000603eb70c001aa"),  # PER fragmentation
    bytes.fromhex("2800"),  # trailing byte
    bytes.fromhex("38ffff03eb"),  # user id above 65535
    bytes.fromhex("0c00"),  # a choice RDP never uses
])
def test_malformed_domain_pdus(data):
    with pytest.raises(ProtocolError):
        mcs.parse_domain_pdu(data)


@pytest.mark.parametrize("data", [
    bytes.fromhex("7f65"), bytes.fromhex("7f6580"), bytes.fromhex("7f658501000000000000"),
    bytes.fromhex("7f6605040101"), bytes.fromhex("7f6603020100"), bytes.fromhex("3003020100"),
])
def test_malformed_connect_pdus(data):
    for parser in (mcs.parse_connect_initial, mcs.parse_connect_response):
        with pytest.raises(ProtocolError):
            parser(data)


def test_mcs_fuzz_raises_only_protocol_error():
    seeds = [x224.unwrap_data(frame) for frame in (
        SPEC_CONNECT_INITIAL, SPEC_CONNECT_RESPONSE, XFREERDP_CONNECT_INITIAL, RDESKTOP_CONNECT_INITIAL,
        SPEC_ERECT_DOMAIN_REQUEST, RDESKTOP_ERECT_DOMAIN_REQUEST, SPEC_ATTACH_USER_CONFIRM,
        SPEC_CHANNEL_JOIN_CONFIRM, RDESKTOP_SEND_DATA_REQUEST, XFREERDP_CLIENT_INFO_SEND_DATA)]
    seeds.append(bytes.fromhex("2180"))
    for data in mutations(seeds, 20000):
        for parser in (mcs.parse_connect_initial, mcs.parse_connect_response, mcs.parse_domain_pdu):
            try:
                parser(data)
            except ProtocolError:
                pass
