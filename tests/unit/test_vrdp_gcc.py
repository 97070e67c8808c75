"""Unit tests of the GCC Conference Create Request/Response and the client/server data blocks.

SPEC_* are MS-RDPBCGR 4.1.3/4.1.4 retyped from their field tables; in 4.1.4 the 32-byte server random and
the 184-byte proprietary certificate are stand-in bytes (opaque to this layer). XFREERDP_*/RDESKTOP* were
captured on loopback from xfreerdp 2.11.7 and rdesktop 1.9.0 (Debian 12); both clients went on to Channel
Join with the response this module builds."""

import struct

import pytest

from services.vrdp import gcc, mcs, x224
from services.vrdp.gcc import (
    ChannelDef,
    ClientClusterData,
    ClientCoreData,
    ClientData,
    ClientMonitorData,
    ClientNetworkData,
    ClientSecurityData,
    MonitorDef,
    ServerCoreData,
    ServerData,
    ServerNetworkData,
    ServerSecurityData,
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


def user_data(frame):
    return mcs.parse_connect_initial(x224.unwrap_data(frame)).user_data


def test_spec_conference_create_request():
    client = gcc.parse_conference_create_request(user_data(SPEC_CONNECT_INITIAL))
    core = client.core
    assert (core.version, core.desktop_width, core.desktop_height) == (gcc.RDP_VERSION_5_PLUS, 1280, 1024)
    assert (core.color_depth, core.sas_sequence, core.keyboard_layout, core.client_build) == (
        gcc.RNS_UD_COLOR_8BPP, gcc.RNS_UD_SAS_DEL, 0x409, 2600)
    assert core.client_name == "ELTONS-DEV2"
    assert (core.keyboard_type, core.keyboard_subtype, core.keyboard_function_keys) == (4, 0, 12)
    assert (core.post_beta2_color_depth, core.client_product_id, core.serial_number) == (gcc.RNS_UD_COLOR_8BPP, 1, 0)
    assert (core.high_color_depth, core.supported_color_depths, core.early_capability_flags) == (24, 7, 1)
    assert core.client_dig_product_id == "69712-783-0357974-42714"
    assert (core.connection_type, core.pad, core.server_selected_protocol) == (0, 0, 0)
    assert core.desktop_physical_width is None  # a Windows 7 client stops after serverSelectedProtocol
    assert core.requested_bpp == 24
    assert client.cluster == ClientClusterData(0x0D, 0)
    assert client.security == ClientSecurityData(0x1B, 0)
    assert client.channels == (ChannelDef("rdpdr", 0x80800000), ChannelDef("cliprdr", 0xC0A00000),
                               ChannelDef("rdpsnd", 0xC0000000))
    assert client.monitor is None and client.other_blocks == ()
    # The builder writes the blocks in the order Windows does, so the request rebuilds byte for byte.
    assert gcc.build_conference_create_request(client) == user_data(SPEC_CONNECT_INITIAL)


def test_spec_conference_create_response_is_built_byte_exact():
    response = mcs.parse_connect_response(x224.unwrap_data(SPEC_CONNECT_RESPONSE))
    server = gcc.parse_conference_create_response(response.user_data)
    assert server.core == ServerCoreData(gcc.RDP_VERSION_5_PLUS, 0, None)
    assert server.network == ServerNetworkData((1004, 1005, 1006), 1003)
    assert (server.security.encryption_method, server.security.encryption_level) == (
        gcc.ENCRYPTION_METHOD_128BIT, gcc.ENCRYPTION_LEVEL_CLIENT_COMPATIBLE)
    assert len(server.security.server_random) == 32 and len(server.security.server_certificate) == 0xB8
    assert gcc.build_conference_create_response(server) == response.user_data


def test_response_header_is_the_21_bytes_rdesktop_skips():
    server = ServerData(ServerCoreData(gcc.RDP_VERSION_5_PLUS, 3, 0), ServerNetworkData(()), ServerSecurityData())
    data = gcc.build_conference_create_response(server)
    assert data[:21] == bytes.fromhex("000500147c00012a14760a01010001c0004d63446e")
    assert data[21:23] == bytes.fromhex("8024")  # always the 2-byte PER length, as Windows
    assert data[23:] == (bytes.fromhex("010c1000" "04000800" "03000000" "00000000")
                         + bytes.fromhex("030c0800" "eb030000")
                         + bytes.fromhex("020c0c00" "00000000" "00000000"))
    assert gcc.parse_conference_create_response(data) == server


def test_server_network_ids_follow_cs_net_order_with_padding():
    client = gcc.parse_conference_create_request(user_data(XFREERDP_CONNECT_INITIAL))
    network = ServerNetworkData.for_channels(client.channels)
    assert network == ServerNetworkData((1004, 1005, 1006, 1007), 1003)
    assert gcc.build_server_network(network) == bytes.fromhex("030c1000eb030400ec03ed03ee03ef03")
    odd = gcc.build_server_network(ServerNetworkData((1004, 1005, 1006)))
    assert odd == bytes.fromhex("030c1000eb030300ec03ed03ee030000")


def test_xfreerdp_conference_create_request():
    client = gcc.parse_conference_create_request(user_data(XFREERDP_CONNECT_INITIAL))
    core = client.core
    assert core.version == 0x0008000C and (core.desktop_width, core.desktop_height) == (1024, 768)
    assert core.early_capability_flags & gcc.RNS_UD_CS_WANT_32BPP_SESSION
    assert core.requested_bpp == 32
    assert core.server_selected_protocol == 0 and core.device_scale_factor == 0
    assert [channel.name for channel in client.channels] == ["rdpdr", "rdpsnd", "cliprdr", "drdynvc"]
    assert [kind for kind, _ in client.other_blocks] == [gcc.CS_MCS_MSGCHANNEL, gcc.CS_MULTITRANSPORT]
    assert gcc.build_conference_create_request(client) == user_data(XFREERDP_CONNECT_INITIAL)


def test_rdesktop_conference_create_requests():
    client = gcc.parse_conference_create_request(user_data(RDESKTOP_CONNECT_INITIAL))
    assert [channel.name for channel in client.channels] == ["cliprdr", "rdpsnd", "snddbg", "rdpdr", "drdynvc"]
    assert client.security == ClientSecurityData(0x3, 0)
    assert client.core.server_selected_protocol == 0 and client.core.desktop_physical_width is None
    # rdesktop writes channel options big-endian: its drdynvc's 0xC0000000 arrives as 0xC0.
    assert client.channels[-1].options == 0xC0
    rdp4 = gcc.parse_conference_create_request(user_data(RDESKTOP4_CONNECT_INITIAL))
    assert rdp4.core.version == gcc.RDP_VERSION_4
    assert rdp4.network is None and rdp4.channels == ()


def test_blocks_in_any_order_and_truncated_core():
    core = ClientCoreData(desktop_width=800, desktop_height=600, client_name="x" * 20, post_beta2_color_depth=0xCA03)
    monitors = ClientMonitorData((MonitorDef(0, 0, 1919, 1079, gcc.MONITOR_PRIMARY), MonitorDef(1920, -10, 3199, 1013)))
    blocks = (gcc.build_client_network(ClientNetworkData((ChannelDef("drdynvc", 0xC0800000),)))
              + gcc.build_client_monitor(monitors) + gcc.build_client_core(core))
    client = gcc.parse_client_data(blocks)
    assert client.core.client_name == "x" * 15  # 32 bytes of UTF-16 keep a terminating NUL
    assert client.core.client_product_id is None
    assert client.core.requested_bpp == 16
    assert client.monitor == monitors
    assert client.channels == (ChannelDef("drdynvc", 0xC0800000),)
    assert client.security is None


def test_core_truncated_mid_field_keeps_whole_fields():
    full = gcc.build_client_core(ClientCoreData(post_beta2_color_depth=0xCA01, client_product_id=1,
                                                serial_number=0, high_color_depth=16))
    cut = full[4:-1]  # highColorDepth half there: absent
    core = gcc.parse_client_core(cut)
    assert core.serial_number == 0 and core.high_color_depth is None
    with pytest.raises(ProtocolError):
        gcc.parse_client_core(full[4:4 + 127])


def test_build_client_core_refuses_gaps():
    with pytest.raises(ValueError):
        gcc.build_client_core(ClientCoreData(high_color_depth=24))


def test_server_security_with_and_without_encryption():
    plain = gcc.build_server_security(ServerSecurityData())
    assert plain == bytes.fromhex("020c0c000000000000000000")
    with pytest.raises(ValueError):
        gcc.build_server_security(ServerSecurityData(gcc.ENCRYPTION_METHOD_128BIT, gcc.ENCRYPTION_LEVEL_HIGH))
    secured = ServerSecurityData(gcc.ENCRYPTION_METHOD_128BIT, gcc.ENCRYPTION_LEVEL_HIGH, bytes(32), b"cert")
    assert gcc.parse_server_security(gcc.build_server_security(secured)[4:]) == secured


@pytest.mark.parametrize("blocks", [
    bytes.fromhex("01c0"),  # header truncated
    bytes.fromhex("01c00300"),  # length below the header
    bytes.fromhex("01c0ff00") + bytes(10),  # length beyond the data
    bytes.fromhex("02c00c000300000000000000"),  # no CS_CORE
    gcc.build_client_core(ClientCoreData()) * 2,  # CS_CORE twice
    gcc.build_client_core(ClientCoreData()) + struct.pack("<HHI", gcc.CS_NET, 8, 32),  # 32 channels
    gcc.build_client_core(ClientCoreData()) + struct.pack("<HHI", gcc.CS_NET, 8, 1),  # channel missing
    gcc.build_client_core(ClientCoreData()) + struct.pack("<HHII", gcc.CS_MONITOR, 12, 0, 17),
])
def test_malformed_client_data(blocks):
    with pytest.raises(ProtocolError):
        gcc.parse_client_data(blocks)


@pytest.mark.parametrize("data", [
    b"", bytes.fromhex("000500147c0001"), bytes.fromhex("000500147c00018100"),
    bytes.fromhex("000500147c0001812a0108"),  # conferenceQueryRequest, not create
    bytes.fromhex("000500147c0001812a000800100001c000447563"),  # key cut short
    bytes.fromhex("000500147c0001812a000800100001c0004d63446e00"),  # server key in a request
])
def test_malformed_conference_create_request(data):
    with pytest.raises(ProtocolError):
        gcc.parse_conference_create_request(data)


def test_gcc_fuzz_raises_only_protocol_error():
    requests = [user_data(frame) for frame in (SPEC_CONNECT_INITIAL, XFREERDP_CONNECT_INITIAL,
                                               RDESKTOP_CONNECT_INITIAL, RDESKTOP4_CONNECT_INITIAL)]
    monitors = ClientData(ClientCoreData(), monitor=ClientMonitorData((MonitorDef(0, 0, 99, 99, 1),)))
    requests.append(gcc.build_conference_create_request(monitors))
    response = mcs.parse_connect_response(x224.unwrap_data(SPEC_CONNECT_RESPONSE)).user_data
    # Fuzzing the inner blocks directly reaches the block parsers more often than through the wrapper.
    blocks = [gcc.build_client_data(gcc.parse_conference_create_request(data)) for data in requests]
    seeds = requests + blocks + [response]
    for data in mutations(seeds, 20000):
        for parser in (gcc.parse_conference_create_request, gcc.parse_client_data,
                       gcc.parse_conference_create_response, gcc.parse_server_data):
            try:
                parser(data)
            except ProtocolError:
                pass
