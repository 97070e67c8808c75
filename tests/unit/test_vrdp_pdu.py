"""Unit tests of the share-level PDU codecs: MS-RDPBCGR 4.1.10-4.1.22 and 4.2.1 examples, round trips, fuzz.

SPEC_* are the spec's annotated examples in their decrypted form (the dumps are RC4-encrypted on the wire;
the field tables give the plaintext). They were retyped as hex and cross-checked byte by byte against the
copies in IronRDP's test suite (crates/ironrdp-testsuite-core: client_info.rs, capsets.rs, rdp.rs) and
against FreeRDP's parsers; 4.2.1 was taken from the spec page's own decrypted dump."""

import struct

import pytest

from services.vrdp.codecs import rle
from services.vrdp.pdu import activation, capabilities, info, output, share
from services.vrdp.pdu import input as rdp_input
from services.vrdp.pdu.activation import Control, FontList, Rect, Synchronize
from services.vrdp.pdu.input import (
    ExtendedMouseEvent,
    KeyboardEvent,
    MouseEvent,
    QoeTimestamp,
    RelativeMouseEvent,
    SyncEvent,
    UnicodeKeyEvent,
)
from services.vrdp.tpkt import ProtocolError, parse_fastpath_header
from tests.support.rdp_fuzz import mutations

# 4.1.10 Client Info PDU, TS_INFO_PACKET after the security header (user "eltons", domain "NTDEV").
SPEC_CLIENT_INFO = bytes.fromhex(
    "09040904b34300000a000c000000000000004e005400440045005600000065006c0074006f006e0073000000000000000000"
    "02001e003100350037002e00350039002e003200340032002e003100350036000000840043003a005c006400650070006f00"
    "740073005c00770032006b0033005f0031005c007400650072006d007300720076005c006e006500770063006c0069006500"
    "6e0074005c006c00690062005c00770069006e00330032005c006f0062006a005c0069003300380036005c006d0073007400"
    "73006300610078002e0064006c006c000000e0010000500061006300690066006900630020005300740061006e0064006100"
    "720064002000540069006d0065000000000000000000000000000000000000000000000000000a0000000500020000000000"
    "000000000000500061006300690066006900630020004400610079006c0069006700680074002000540069006d0065000000"
    "000000000000000000000000000000000000000000000400000001000200000000000000c4ffffff0000000001000000"
)

# 4.1.13 Server Demand Active PDU (the dump's 10-byte share control header + shareId first).
SPEC_DEMAND_ACTIVE = bytes.fromhex(
    "6f011100ea03ea030100"
    "04005901524450000d00000009000800ea03dce201001800010003000002000000001d04000000000000010114000c000200"
    "000040060000160028000000000070f613f30100000001000000180000009cf613f361a6828000000000005091bf0e000800"
    "0001000002001c00180001000100010000050004000001000100000001000000030058000000000000000000000000000000"
    "0000000000000100140000000100000022000101010101000001010101010000000101010101010101000101010100000000"
    "000000000000000040420f0000000000000000000a00080006000000120008000100000008000a000100190019000d005800"
    "35000000a1060000000000000cf613f3935a37f3009030e1341c38f340f613f3040000004c54dce20850dce2010000000850"
    "dce20000000038f613f32e0538f30850dce22cf613f30000000008000a0001000000170008000000000018000b0000000000"
    "00000000000000"
)

# 4.1.14 Client Confirm Active PDU.
SPEC_CONFIRM_ACTIVE = bytes.fromhex(
    "f0011300ef03ea030100"
    "ea030600da014d53545343001200000001001800010003000002000000001d04000000000000000002001c00180001000100"
    "0100000500040000010001000000010000000300580000000000000000000000000000000000000000000100140000000100"
    "00002a0001010101010000010101000100000001010101010101010001010100000000000000000000000000008403000000"
    "00000000000013002800030000037800000078000000fb09008000000000000000000000000000000000000000000a000800"
    "0600000007000c00000000000000000005000c00000000000200020008000a0001001400150009000800000000000d005800"
    "150000000904000004000000000000000c000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000c000800010000000e00080001000000"
    "10003400fe000400fe000400fe000800fe000800fe001000fe002000fe004000fe008000fe00000140000008000100010300"
    "00000f0008000100000011000c0001000000001e640014000c00010000004006000015000c0002000000000a000116002800"
    "000000000000000000000000000000000000000000000000000000000000000000000000"
)

# A Confirm Active whose lengthCombinedCapabilities disagrees with its sets (IronRDP's regression case).
CONFIRM_ACTIVE_BAD_COMBINED_LENGTH = bytes.fromhex(
    "ff011300ef03ea030100"
    "ea030600e9014d53545343001400000001001800010003000002000000001d04000000000000000002001c00200001000100"
    "010020035802000001000100000a010000000300580000000000000000000000000000000000000000000100140000000100"
    "00002a0001010101010000010101000100000001010101010101010001010100000000000000000000000000008403000000"
    "0000e4040000040028000000000000000000000000000000000000000000000000007800000478000010510100400a000800"
    "0600000007000c00000000000000000005000c00000000000200020008000a0001001400150009000800000000000d005800"
    "910000000904000004000000000000000c000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000c000800010000000e00080001000000"
    "10003400fe000400fe000400fe000800fe000800fe001000fe002000fe004000fe008000fe00000140000008000100010300"
    "00000f0008000100000011000c0001000000001e6400140008000100000015000c0002000000000a00011600280000000000"
    "00000000000000000000000000000000000000000000000000000000000000001a0008000000000018000b0001000000030c"
    "00"
)

# 4.1.15-4.1.18 client finalization PDUs and 4.1.21/4.1.22 server Granted Control / Font Map.
SPEC_CLIENT_SYNCHRONIZE = bytes.fromhex("16001700ef03ea030100000108001f0000000100ea03")
SPEC_CLIENT_COOPERATE = bytes.fromhex("1a001700ef03ea03010000010c00140000000400000000000000")
SPEC_CLIENT_REQUEST_CONTROL = bytes.fromhex("1a001700ef03ea03010000010c00140000000100000000000000")
SPEC_CLIENT_FONT_LIST = bytes.fromhex("1a001700ef03ea03010000010c00270000000000000003003200")
SPEC_SERVER_GRANTED_CONTROL = bytes.fromhex("1a001700ea03ea03010000020c00140000000200ef03ea030000")
SPEC_SERVER_FONT_MAP = bytes.fromhex("1a001700ea03ea03010000020c00280000000000000003000400")
# 4.2.1 Client Shutdown Request PDU (shareId 0x000203EA in that trace).
SPEC_SHUTDOWN_REQUEST = bytes.fromhex("12001700ef03ea0302000001040024000000")
# 2.2.1.12: the licensing PDU Windows, FreeRDP, xrdp and IronRDP send (wMsgSize 0x10).
VALID_CLIENT_LICENSE = bytes.fromhex("80000000ff031000070000000200000004000000")

SPEC_TZ = info.parse_client_info(SPEC_CLIENT_INFO).extended.time_zone


def fuzz(parser, seeds, count=10000, seed=1):
    for data in mutations(seeds, count, seed):
        try:
            parser(data)
        except ProtocolError:
            pass


# --- share headers ---------------------------------------------------------------------------------

def test_share_data_header_of_spec_synchronize():
    pdu = share.parse_data_pdu(SPEC_CLIENT_SYNCHRONIZE)
    assert (pdu.share_id, pdu.pdu_source, pdu.stream_id, pdu.pdu_type2) == (0x103EA, 1007, share.STREAM_LOW,
                                                                             share.PDUTYPE2_SYNCHRONIZE)
    assert pdu.uncompressed_length == 8 and not pdu.compressed
    assert share.build_share_data(0x103EA, 1007, share.PDUTYPE2_SYNCHRONIZE, pdu.payload) == SPEC_CLIENT_SYNCHRONIZE


def test_share_data_uncompressed_length_is_total_minus_14():
    pdu = share.parse_data_pdu(SPEC_SHUTDOWN_REQUEST)
    assert (pdu.share_id, pdu.pdu_type2, pdu.uncompressed_length, pdu.payload) == (
        0x203EA, share.PDUTYPE2_SHUTDOWN_REQUEST, 4, b"")
    assert share.build_share_data(0x203EA, 1007, share.PDUTYPE2_SHUTDOWN_REQUEST, b"") == SPEC_SHUTDOWN_REQUEST
    assert isinstance(activation.parse_client_data(pdu), activation.ShutdownRequest)


def test_split_packed_share_control_pdus_and_flow_pdu():
    flow = struct.pack("<HHBBH", share.FLOW_PDU_MARKER, 0x42, 0, 1, 1007)
    pdus = share.split_share_control(SPEC_CLIENT_COOPERATE + flow + SPEC_CLIENT_REQUEST_CONTROL)
    assert [p.flow for p in pdus] == [False, True, False]
    assert activation.parse_client_data(share.parse_share_data(pdus[2])) == Control(1, 0, 0)
    with pytest.raises(ProtocolError):
        share.parse_share_control(SPEC_CLIENT_COOPERATE + b"\0")


def test_short_share_control_header_without_source():
    pdu = share.parse_share_control(struct.pack("<HH", 4, 0x16))
    assert (pdu.pdu_type, pdu.pdu_source, pdu.body) == (share.PDUTYPE_DEACTIVATEALLPDU, 0, b"")


@pytest.mark.parametrize("data", [b"", b"\x03", struct.pack("<HH", 3, 0x17), struct.pack("<HHH", 30, 0x17, 1)])
def test_malformed_share_control(data):
    with pytest.raises(ProtocolError):
        share.parse_share_control(data)


def test_share_data_rejects_other_pdu_types():
    with pytest.raises(ProtocolError):
        share.parse_data_pdu(SPEC_DEMAND_ACTIVE)


# --- Client Info and licensing ---------------------------------------------------------------------

def test_spec_client_info():
    client = info.parse_client_info(SPEC_CLIENT_INFO)
    assert client.code_page == 0x04090409
    assert client.flags == (info.INFO_MOUSE | info.INFO_DISABLECTRLALTDEL | info.INFO_UNICODE
                            | info.INFO_MAXIMIZESHELL | info.INFO_COMPRESSION | info.INFO_ENABLEWINDOWSKEY
                            | info.INFO_FORCE_ENCRYPTED_CS_PDU | (1 << info.COMPRESSION_TYPE_SHIFT))
    assert client.compression_type == 1
    assert (client.domain, client.user_name, client.password) == ("NTDEV", "eltons", "")
    assert (client.alternate_shell, client.working_dir) == ("", "")
    ext = client.extended
    assert (ext.address_family, ext.client_address) == (info.AF_INET, "157.59.242.156")
    assert ext.client_dir.endswith("\\i386\\mstscax.dll")
    tz = ext.time_zone
    assert (tz.bias, tz.standard_name, tz.daylight_name, tz.daylight_bias) == (
        480, "Pacific Standard Time", "Pacific Daylight Time", -60)
    assert struct.unpack("<8H", tz.standard_date)[1:4] == (10, 0, 5)  # last Sunday of October
    assert (ext.session_id, ext.performance_flags, ext.autoreconnect_cookie) == (0, 1, None)
    assert info.build_client_info(client) == SPEC_CLIENT_INFO


@pytest.mark.parametrize("field", ["domain", "user_name", "password"])
def test_client_info_refuses_a_nul_inside_a_credential(field):
    """'alice\\0evil' once logged on as alice: the text after a NUL was dropped unseen."""
    data = info.build_client_info(info.ClientInfo(**{field: "alice\0evil"}))
    with pytest.raises(ProtocolError, match="contains a NUL"):
        info.parse_client_info(data)


def test_client_info_nul_padding_at_the_end_is_not_part_of_the_text():
    data = info.build_client_info(info.ClientInfo(user_name="alice\0\0"))
    assert info.parse_client_info(data).user_name == "alice"


def test_client_info_round_trip_with_password_and_cookie():
    cookie = info.AutoReconnectCookie(1, 7, bytes(range(16)))
    ext = info.ExtendedInfo(info.AF_INET6, "::1", "C:\\x", SPEC_TZ, 3, info.PERF_DISABLE_WALLPAPER, cookie)
    client = info.ClientInfo(0, info.INFO_UNICODE | info.INFO_AUTOLOGON, "@1", "jürgen", "pässwörd", "sh", "/",
                             ext)
    data = info.build_client_info(client)
    assert info.parse_client_info(data) == client
    # Reserved fields and the dynamic DST name after the cookie are ignored.
    assert info.parse_client_info(data + bytes(4) + struct.pack("<H", 4) + "ab".encode("utf-16-le")) == client


def test_client_info_truncated_extended_info_keeps_whole_fields():
    full = SPEC_CLIENT_INFO
    start_tz = len(full) - 8 - 172
    partial = info.parse_client_info(full[:start_tz + 100])
    assert partial.extended.client_address == "157.59.242.156" and partial.extended.time_zone is None
    partial = info.parse_client_info(full[:-2])
    assert partial.extended.session_id == 0 and partial.extended.performance_flags is None
    assert info.parse_client_info(full[:start_tz]).extended.time_zone is None


def test_client_info_ansi_and_rdp4():
    body = struct.pack("<II5H", 0, info.INFO_MOUSE, 4, 3, 0, 0, 0) + b"TEST\0bob\0\0\0\0"
    client = info.parse_client_info(body, rdp5=False)
    assert (client.domain, client.user_name, client.extended) == ("TEST", "bob", None)


@pytest.mark.parametrize("data", [
    SPEC_CLIENT_INFO[:17],
    SPEC_CLIENT_INFO[:30],                                                     # domain cut
    struct.pack("<II5H", 0, info.INFO_UNICODE, 3, 0, 0, 0, 0) + bytes(12),     # odd Unicode length
    struct.pack("<II5H", 0, info.INFO_UNICODE, 514, 0, 0, 0, 0) + bytes(600),  # over the 512 limit
])
def test_malformed_client_info(data):
    with pytest.raises(ProtocolError):
        info.parse_client_info(data)


def test_client_info_rdp4_limits():
    body = struct.pack("<II5H", 0, 0, 0, 45, 0, 0, 0) + b"\0" + b"u" * 45 + b"\0\0\0\0"
    assert info.parse_client_info(body).user_name == "u" * 45
    with pytest.raises(ProtocolError):
        info.parse_client_info(body, rdp5=False)


def test_valid_client_license_pdu():
    assert info.build_license_valid_client() == VALID_CLIENT_LICENSE
    assert VALID_CLIENT_LICENSE[:2] == b"\x80\x00"  # aardwolf reads these as PER tokenInhibitConfirm


# --- capabilities ----------------------------------------------------------------------------------

def test_spec_demand_active_round_trip():
    demand = capabilities.parse_demand_active(SPEC_DEMAND_ACTIVE)
    assert (demand.share_id, demand.pdu_source, demand.source_descriptor, demand.session_id) == (
        0x103EA, 0x3EA, b"RDP\0", 0)
    assert [s.cap_type for s in demand.capability_sets] == [9, 1, 20, 22, 14, 2, 3, 10, 18, 8, 13, 23, 24]
    assert capabilities.build_demand_active(demand.capability_sets) == SPEC_DEMAND_ACTIVE
    caps = capabilities.client_capabilities(demand.capability_sets)
    assert caps.extra_flags == 0x041D and caps.input_flags == 0x35 and caps.bpp == 24


def test_spec_confirm_active():
    confirm = capabilities.parse_confirm_active(SPEC_CONFIRM_ACTIVE)
    assert (confirm.share_id, confirm.pdu_source, confirm.originator_id, confirm.source_descriptor) == (
        0x103EA, 1007, 0x3EA, b"MSTSC\0")
    assert len(confirm.capability_sets) == 18
    caps = capabilities.client_capabilities(confirm.capability_sets)
    assert caps.extra_flags == (capabilities.FASTPATH_OUTPUT_SUPPORTED | capabilities.NO_BITMAP_COMPRESSION_HDR
                                | capabilities.LONG_CREDENTIALS_SUPPORTED | capabilities.AUTORECONNECT_SUPPORTED
                                | capabilities.ENC_SALTED_CHECKSUM)
    assert caps.fastpath_output and caps.no_bitmap_compression_header and caps.salted_checksum
    assert (caps.bpp, caps.desktop_width, caps.desktop_height, caps.desktop_resize) == (24, 1280, 1024, True)
    assert (caps.color_pointer, caps.color_pointer_cache_size, caps.pointer_cache_size) == (True, 20, 21)
    assert caps.input_flags == (capabilities.INPUT_FLAG_SCANCODES | capabilities.INPUT_FLAG_MOUSEX
                                | capabilities.INPUT_FLAG_UNICODE)
    assert not caps.fastpath_input
    assert (caps.keyboard_layout, caps.keyboard_type, caps.keyboard_function_keys) == (0x409, 4, 12)
    assert (caps.vc_flags, caps.vc_chunk_size) == (capabilities.VCCAPS_COMPR_SC, 1600)
    assert caps.multifragment_max is None and caps.large_pointer_flags == 0 and caps.surface_command_flags == 0
    assert capabilities.build_confirm_active(confirm.capability_sets) == SPEC_CONFIRM_ACTIVE


def test_confirm_active_with_wrong_combined_length():
    confirm = capabilities.parse_confirm_active(CONFIRM_ACTIVE_BAD_COMBINED_LENGTH)
    caps = capabilities.client_capabilities(confirm.capability_sets)
    assert len(confirm.capability_sets) == 20 and caps.multifragment_max == 0 and caps.bpp == 32


def test_server_capabilities_values_clients_read():
    sets = capabilities.server_capabilities(16, 1024, 768, large_pointer=1, surface_commands=0x52,
                                            frame_acknowledge=2, bitmap_cache_host=True)
    lengths = {s.cap_type: len(s.to_bytes()) for s in sets}
    assert lengths[capabilities.CAPSTYPE_GENERAL] == 24 and lengths[capabilities.CAPSTYPE_BITMAP] == 28
    assert lengths[capabilities.CAPSTYPE_ORDER] == 88 and lengths[capabilities.CAPSTYPE_INPUT] == 88
    pdu = capabilities.build_demand_active(sets, share_id=0x10001, session_id=5)
    demand = capabilities.parse_demand_active(pdu)
    assert demand.capability_sets == sets and demand.session_id == 5
    caps = capabilities.client_capabilities(demand.capability_sets)
    assert caps.extra_flags == capabilities.DEFAULT_EXTRA_FLAGS and caps.refresh_rect and caps.suppress_output
    assert (caps.bpp, caps.desktop_width, caps.desktop_height, caps.desktop_resize) == (16, 1024, 768, True)
    assert caps.order_support == bytes(32) and caps.order_flags == 0x0A
    assert caps.input_flags == capabilities.DEFAULT_INPUT_FLAGS and caps.fastpath_input
    assert (caps.pointer_cache_size, caps.multifragment_max, caps.large_pointer_flags) == (25, 0x3FFFFF, 1)
    assert (caps.surface_command_flags, caps.frame_acknowledge) == (0x52, 2)
    with pytest.raises(ValueError):
        capabilities.general_capability(extra_flags=0)


def test_unknown_and_short_capability_sets_are_tolerated():
    codec = capabilities.CODEC_GUID_NSCODEC.bytes_le + bytes([1]) + struct.pack("<H", 3) + b"\x01\x01\x03"
    sets = [capabilities.CapabilitySet(0x7777, b"xyz"), capabilities.CapabilitySet(capabilities.CAPSTYPE_POINTER,
                                                                                     struct.pack("<HH", 1, 20)),
            capabilities.CapabilitySet(capabilities.CAPSTYPE_BITMAP_CODECS, bytes([1]) + codec)]
    confirm = capabilities.parse_confirm_active(capabilities.build_confirm_active(sets))
    caps = capabilities.client_capabilities(confirm.capability_sets)
    assert caps.color_pointer_cache_size == 20 and caps.pointer_cache_size is None
    assert caps.bitmap_codecs == (capabilities.BitmapCodec(capabilities.CODEC_GUID_NSCODEC, 1, b"\x01\x01\x03"),)
    assert caps.set_types == (0x7777, 8, 29)


@pytest.mark.parametrize("data", [
    SPEC_CONFIRM_ACTIVE[:20],
    capabilities.build_confirm_active([capabilities.CapabilitySet(1, b"")])[:-4] + struct.pack("<HH", 1, 2),
    capabilities.build_confirm_active([capabilities.CapabilitySet(1, bytes(20))])[:-3],
    SPEC_DEMAND_ACTIVE,
])
def test_malformed_confirm_active(data):
    with pytest.raises(ProtocolError):
        capabilities.parse_confirm_active(data)


# --- finalization ----------------------------------------------------------------------------------

def test_spec_client_finalization_pdus():
    parsed = [activation.parse_client_data(share.parse_data_pdu(data)) for data in (
        SPEC_CLIENT_SYNCHRONIZE, SPEC_CLIENT_COOPERATE, SPEC_CLIENT_REQUEST_CONTROL, SPEC_CLIENT_FONT_LIST)]
    assert parsed == [Synchronize(1, 0x3EA), Control(activation.CTRLACTION_COOPERATE, 0, 0),
                      Control(activation.CTRLACTION_REQUEST_CONTROL, 0, 0), FontList(0, 0, 3, 50)]
    assert activation.build_font_list() == SPEC_CLIENT_FONT_LIST


def test_spec_server_finalization_pdus():
    assert activation.build_granted_control(1007) == SPEC_SERVER_GRANTED_CONTROL
    assert activation.build_font_map() == SPEC_SERVER_FONT_MAP
    sync = share.parse_data_pdu(activation.build_synchronize(1007))
    assert activation.parse_synchronize(sync.payload) == Synchronize(1, 1007) and sync.pdu_source == 0x3EA
    cooperate = share.parse_data_pdu(activation.build_cooperate())
    assert activation.parse_control(cooperate.payload) == Control(activation.CTRLACTION_COOPERATE, 0, 0)


def test_refresh_rect_suppress_output_and_frame_ack():
    payload = bytes([2, 0, 0, 0]) + struct.pack("<8H", 0, 0, 63, 63, 64, 0, 127, 31)
    data = share.build_share_data(0x103EA, 1007, share.PDUTYPE2_REFRESH_RECT, payload)
    assert activation.parse_client_data(share.parse_data_pdu(data)).areas == (Rect(0, 0, 63, 63),
                                                                              Rect(64, 0, 127, 31))
    assert activation.parse_suppress_output(bytes(4)) == activation.SuppressOutput(False, None)
    allow = bytes([1, 0, 0, 0]) + struct.pack("<4H", 0, 0, 1023, 767)
    assert activation.parse_suppress_output(allow) == activation.SuppressOutput(True, Rect(0, 0, 1023, 767))
    assert activation.parse_frame_acknowledge(struct.pack("<I", 9)) == activation.FrameAcknowledge(9)
    unknown = share.parse_data_pdu(share.build_share_data(1, 1007, 0x99, b"ab"))
    assert activation.parse_client_data(unknown) == activation.UnknownData(0x99, b"ab")
    with pytest.raises(ProtocolError):
        activation.parse_refresh_rect(payload[:-1])
    compressed = share.parse_data_pdu(share.build_share_data(1, 1007, 0x1F, b"abcd",
                                                             compressed_type=share.PACKET_COMPRESSED))
    with pytest.raises(ProtocolError):
        activation.parse_client_data(compressed)


def test_server_session_pdus():
    error = share.parse_data_pdu(activation.build_set_error_info(activation.ERRINFO_LOGOFF_BY_USER))
    assert (error.pdu_source, error.pdu_type2, error.payload) == (0, share.PDUTYPE2_SET_ERROR_INFO_PDU,
                                                                  struct.pack("<I", 0x0C))
    plain = share.parse_data_pdu(activation.build_save_session_info_plain_notify())
    assert plain.payload[:4] == struct.pack("<I", activation.INFOTYPE_LOGON_PLAINNOTIFY) and len(plain.payload) == 580
    logon = share.parse_data_pdu(activation.build_save_session_info_logon("VRDP", "alice", 1)).payload
    assert len(logon) == 4 + 576 and logon[4:8] == struct.pack("<I", 10) and logon[8:16] == "VRDP".encode("utf-16-le")
    assert logon[60:64] == struct.pack("<I", 12) and logon[-4:] == struct.pack("<I", 1)
    arc = share.parse_data_pdu(activation.build_save_session_info_autoreconnect(5, bytes(16))).payload
    assert struct.unpack_from("<IHII", arc) == (activation.INFOTYPE_LOGON_EXTENDED_INFO, 38, 1, 28)
    denied = share.parse_data_pdu(activation.build_shutdown_denied())
    assert denied.pdu_type2 == share.PDUTYPE2_SHUTDOWN_DENIED and denied.payload == b""
    leds = share.parse_data_pdu(activation.build_set_keyboard_indicators(activation.TS_SYNC_NUM_LOCK))
    assert leds.payload == struct.pack("<HH", 0, 2)
    deactivate = share.parse_share_control(activation.build_deactivate_all())
    assert deactivate.pdu_type == share.PDUTYPE_DEACTIVATEALLPDU and deactivate.body == bytes.fromhex("ea0301000100") + b"\0"


def test_fuzz_connection_pdus_raise_only_protocol_error():
    finalization = [SPEC_CLIENT_SYNCHRONIZE, SPEC_CLIENT_COOPERATE, SPEC_CLIENT_REQUEST_CONTROL,
                    SPEC_CLIENT_FONT_LIST, SPEC_SHUTDOWN_REQUEST,
                    share.build_share_data(1, 1007, share.PDUTYPE2_REFRESH_RECT, bytes([1, 0, 0, 0]) + bytes(8)),
                    share.build_share_data(1, 1007, share.PDUTYPE2_SUPPRESS_OUTPUT, bytes([1, 0, 0, 0]) + bytes(8))]
    client_info = info.build_client_info(info.ClientInfo(extended=info.ExtendedInfo(
        time_zone=SPEC_TZ, session_id=0, performance_flags=0,
        autoreconnect_cookie=info.AutoReconnectCookie(1, 2, bytes(16)))))
    fuzz(info.parse_client_info, [SPEC_CLIENT_INFO, client_info])
    fuzz(lambda d: info.parse_client_info(d, rdp5=False), [SPEC_CLIENT_INFO])
    fuzz(lambda d: capabilities.client_capabilities(capabilities.parse_confirm_active(d).capability_sets),
         [SPEC_CONFIRM_ACTIVE, CONFIRM_ACTIVE_BAD_COMBINED_LENGTH])
    fuzz(capabilities.parse_demand_active, [SPEC_DEMAND_ACTIVE])
    fuzz(lambda d: [activation.parse_client_data(share.parse_share_data(p)) for p in share.split_share_control(d)
                    if not p.flow], finalization)


# --- input -----------------------------------------------------------------------------------------

ALL_EVENTS = [KeyboardEvent(0x1D, extended=True), KeyboardEvent(0x1D, release=True, extended=True),
              KeyboardEvent(0x1D, extended1=True), UnicodeKeyEvent(0x20AC), UnicodeKeyEvent(0x20AC, release=True),
              MouseEvent(rdp_input.PTR_FLAGS_MOVE, 100, 200),
              MouseEvent(rdp_input.PTR_FLAGS_DOWN | rdp_input.PTR_FLAGS_BUTTON1, 100, 200),
              MouseEvent(rdp_input.PTR_FLAGS_BUTTON2, 1, 2),
              MouseEvent(rdp_input.PTR_FLAGS_WHEEL | 0x78, 0, 0),
              MouseEvent(rdp_input.PTR_FLAGS_WHEEL | rdp_input.PTR_FLAGS_WHEEL_NEGATIVE | 0x88, 0, 0),
              ExtendedMouseEvent(rdp_input.PTR_XFLAGS_DOWN | rdp_input.PTR_XFLAGS_BUTTON2, 3, 4),
              SyncEvent(rdp_input.TS_SYNC_NUM_LOCK | rdp_input.TS_SYNC_CAPS_LOCK), RelativeMouseEvent(0, -5, 7)]


def test_slow_path_input_round_trip_and_layout():
    payload = rdp_input.build_input_pdu(ALL_EVENTS)
    assert len(payload) == 4 + 12 * len(ALL_EVENTS)
    assert rdp_input.parse_input_pdu(payload) == ALL_EVENTS
    # One scancode event laid out by hand from TS_KEYBOARD_EVENT: Right Ctrl (E0 1D) down.
    key = struct.pack("<HHIHHHH", 1, 0, 0, 0x0004, 0x4100, 0x1D, 0)
    assert rdp_input.parse_input_pdu(key) == [KeyboardEvent(0x1D, extended=True)]


def test_mouse_event_meaning():
    events = {e: e for e in ALL_EVENTS if isinstance(e, MouseEvent)}
    down, right, up_wheel, down_wheel = list(events)[1:5]
    assert (down.button, down.pressed, right.button, right.pressed) == (1, True, 2, False)
    assert (up_wheel.wheel, down_wheel.wheel, down_wheel.button, down_wheel.hwheel) == (120, -120, None, 0)
    assert MouseEvent(rdp_input.PTR_FLAGS_HWHEEL | 0x78, 0, 0).hwheel == 120
    assert ALL_EVENTS[5].moved and ALL_EVENTS[10].button == 5 and ALL_EVENTS[10].pressed
    assert ExtendedMouseEvent(rdp_input.PTR_XFLAGS_BUTTON1, 0, 0).button == 4


def test_fast_path_input_round_trip():
    frame = rdp_input.build_fastpath_input(ALL_EVENTS + [QoeTimestamp(123456)])
    assert parse_fastpath_header(frame).num_events == 14
    assert rdp_input.parse_fastpath_input(frame) == ALL_EVENTS + [QoeTimestamp(123456)]
    many = [KeyboardEvent(n) for n in range(20)]
    frame = rdp_input.build_fastpath_input(many)
    assert parse_fastpath_header(frame).num_events == 0 and rdp_input.parse_fastpath_input(frame) == many


def test_fast_path_input_bytes():
    # FreeRDP's fast-path scancode event: header = flags | code << 5; Right Ctrl release = 0x03 0x1D.
    assert rdp_input.parse_fastpath_events(bytes([0x03, 0x1D]), 1) == [KeyboardEvent(0x1D, True, True)]
    # Mouse move to (0x0102, 0x0304): eventCode 1 << 5, pointerFlags 0x0800.
    assert rdp_input.parse_fastpath_events(bytes.fromhex("20000802010403"), 1) == [MouseEvent(0x800, 0x102, 0x304)]
    # Sync with NumLock | CapsLock in the eventFlags, then Unicode 'A' release.
    assert rdp_input.parse_fastpath_events(bytes.fromhex("66814100"), 2) == [SyncEvent(6), UnicodeKeyEvent(0x41, True)]


@pytest.mark.parametrize("body, count", [(b"", 1), (b"\x20\x00", 1), (b"\xe0", 1), (bytes([0x03, 0x1D, 0]), 1),
                                          (b"", 0)])
def test_malformed_fast_path_input(body, count):
    with pytest.raises(ProtocolError):
        rdp_input.parse_fastpath_events(body, count)


def test_malformed_slow_path_input():
    with pytest.raises(ProtocolError):
        rdp_input.parse_input_pdu(struct.pack("<HHIHHHH", 1, 0, 0, 0x7777, 0, 0, 0))
    with pytest.raises(ProtocolError):
        rdp_input.parse_input_pdu(rdp_input.build_input_pdu(ALL_EVENTS)[:-1])
    with pytest.raises(ProtocolError):
        rdp_input.parse_fastpath_input(bytes([0x80 | 1 << 2, 4, 0x03, 0x1D]))


def test_fuzz_input_raises_only_protocol_error():
    fuzz(rdp_input.parse_input_pdu, [rdp_input.build_input_pdu(ALL_EVENTS)])
    fuzz(rdp_input.parse_fastpath_input, [rdp_input.build_fastpath_input(ALL_EVENTS + [QoeTimestamp(1)]),
                                          rdp_input.build_fastpath_input([KeyboardEvent(n) for n in range(20)])])


# --- output ----------------------------------------------------------------------------------------

def test_bitmap_update_layout_and_codec_flags():
    np = pytest.importorskip("numpy")
    tile = np.zeros((4, 8, 4), np.uint8)
    tile[1:3, 2:6] = (255, 0, 0, 0)
    raw = output.BitmapRect(0, 0, 7, 3, 8, 4, 16, 0, bytes(64))
    compressed = rle.compress(tile, 16, header=False)
    packed = output.BitmapRect(8, 0, 15, 3, 8, 4, 16, rle.bitmap_flags(False), compressed)
    data = output.bitmap_update_data([raw, packed])
    assert data[:4] == struct.pack("<HH", 1, 2)
    assert data[4:22] == struct.pack("<9H", 0, 0, 7, 3, 8, 4, 16, 0, 64)
    assert output.parse_bitmap_update_data(data) == [raw, packed]
    assert packed.flags == output.BITMAP_COMPRESSION | output.NO_BITMAP_COMPRESSION_HDR
    frames = output.build_fastpath_updates(output.FASTPATH_UPDATETYPE_BITMAP, data, None)
    assert len(frames) == 1
    header = parse_fastpath_header(frames[0])
    assert (header.action, header.flags, header.length) == (0, 0, len(frames[0]))
    (update,) = output.parse_fastpath_updates(frames[0][header.header_size:])
    assert (update.code, update.fragmentation, update.data) == (1, output.FASTPATH_FRAGMENT_SINGLE, data)


def test_fragmentation_of_large_updates():
    data = bytes(range(256)) * 200  # 51200 bytes: four PDUs
    frames = output.build_fastpath_updates(output.FASTPATH_UPDATETYPE_BITMAP, data, 0x3FFFFF)
    assert all(len(frame) <= output.FASTPATH_MAX_PDU for frame in frames)
    updates = [output.parse_fastpath_updates(f[parse_fastpath_header(f).header_size:])[0] for f in frames]
    assert [u.fragmentation for u in updates] == [output.FASTPATH_FRAGMENT_FIRST, output.FASTPATH_FRAGMENT_NEXT,
                                                  output.FASTPATH_FRAGMENT_NEXT, output.FASTPATH_FRAGMENT_LAST]
    assert b"".join(u.data for u in updates) == data and {u.code for u in updates} == {1}
    encrypted = output.fastpath_update_bodies(1, data, 0x3FFFFF, encrypted=True)
    assert all(len(body) + 3 + 8 <= output.FASTPATH_MAX_PDU for body in encrypted)
    with pytest.raises(ValueError):
        output.build_fastpath_updates(1, data, None)      # no MultifragmentUpdate capability
    with pytest.raises(ValueError):
        output.build_fastpath_updates(1, data, 0xFFFF // 2)  # more than the client reassembles


def test_pointer_updates():
    width, height = 3, 2
    pixels = bytes([10, 20, 30, 255, 0, 0, 0, 0, 1, 2, 3, 128,   # top row: opaque, transparent, half
                    40, 50, 60, 255, 70, 80, 90, 255, 0, 0, 0, 0])
    shape = output.pointer_from_bgra(pixels, width, height, 1, 5, cache_index=2)
    assert shape.hot_y == 1 and shape.xor_bpp == 32
    assert shape.xor_mask[:12] == pixels[12:20] + bytes(4)  # bottom-up, transparent pixel zeroed
    assert shape.and_mask == bytes([0x20, 0, 0x40, 0])       # 1 bpp rows padded to 2 bytes
    data = output.new_pointer_data(shape)
    assert struct.unpack_from("<8H", data) == (32, 2, 1, 1, 3, 2, 4, 24)
    assert data[16:] == shape.xor_mask + shape.and_mask
    large = output.large_pointer_data(shape)
    assert struct.unpack_from("<6HII", large) == (32, 2, 1, 1, 3, 2, 4, 24)
    big = output.pointer_from_bgra(bytes(128 * 128 * 4), 128, 128, 0, 0)
    with pytest.raises(ValueError):
        output.new_pointer_data(big)
    assert output.cached_pointer_data(2) == b"\x02\x00"
    assert output.pointer_position_data(5, 6) == struct.pack("<HH", 5, 6)
    hidden = share.parse_data_pdu(output.build_system_pointer_pdu(True))
    assert hidden.pdu_type2 == share.PDUTYPE2_POINTER and hidden.payload == struct.pack("<HHI", 1, 0, 0)
    default = share.parse_data_pdu(output.build_system_pointer_pdu(False))
    assert default.payload == struct.pack("<HHI", 1, 0, 0x7F00)
    (null,) = output.build_fastpath_updates(output.FASTPATH_UPDATETYPE_PTR_NULL, b"", None)
    assert null == bytes([0, 0x80, 6, 0x05, 0, 0])


def test_slow_path_updates():
    rect = output.BitmapRect(0, 0, 3, 0, 4, 1, 32, 0, bytes(16))
    pdu = share.parse_data_pdu(output.build_update_pdu(output.bitmap_update_data([rect])))
    assert pdu.pdu_type2 == share.PDUTYPE2_UPDATE and output.parse_bitmap_update_data(pdu.payload) == [rect]
    sync = share.parse_data_pdu(output.build_update_synchronize())
    assert sync.payload == struct.pack("<HH", output.UPDATETYPE_SYNCHRONIZE, 0)


def test_fuzz_output_parsers_raise_only_protocol_error():
    rect = output.BitmapRect(0, 0, 3, 0, 4, 1, 32, 0, bytes(16))
    data = output.bitmap_update_data([rect, rect])
    fuzz(output.parse_bitmap_update_data, [data])
    fuzz(output.parse_fastpath_updates, [output.fastpath_update(1, data), output.fastpath_update(5, b"")])


def test_palette_and_synchronize_fast_path_updates():
    from services.vrdp.codecs import convert
    (palette,) = output.build_fastpath_updates(output.FASTPATH_UPDATETYPE_PALETTE, convert.palette_update_data(), None)
    (update,) = output.parse_fastpath_updates(palette[3:])
    assert update.code == output.FASTPATH_UPDATETYPE_PALETTE and len(update.data) == 8 + 256 * 3
    assert output.build_fastpath_updates(output.FASTPATH_UPDATETYPE_SYNCHRONIZE, b"", None) == [
        bytes([0, 0x80, 6, 0x03, 0, 0])]
