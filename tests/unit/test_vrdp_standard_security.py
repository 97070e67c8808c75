"""Standard RDP Security through the acceptor: a hand-written client whose crypto is the spec's formulas
spelled out (tests/unit/test_vrdp_security.py), FreeRDP's own RSA as an oracle for the client random,
security negotiation per Security/Method, key updates after 4096 packets and malformed exchanges."""

import ctypes
import ctypes.util
import dataclasses
import hashlib
import os
import struct

import numpy as np
import pytest

from services.vrdp import connection as rdp
from services.vrdp import gcc, mcs, security, security_policy, tls, x224
from services.vrdp.codecs import convert
from services.vrdp.connection import Connection, ConnectionConfig, State
from services.vrdp.pdu import activation, capabilities, info, output, share
from services.vrdp.pdu import input as rdp_input
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
from tests.support.rdp_client_side import client_caps, frame_pattern, paint
from tests.support.rdp_fuzz import mutations
from tests.support.rdp_security_reference import ref_keys, ref_mac, ref_update
from tests.support.rdp_vectors import (
    RDESKTOP4_CONNECT_INITIAL,
    XFREERDP_CONNECT_INITIAL,
)

M40, M56 = security.ENCRYPTION_METHOD_40BIT, security.ENCRYPTION_METHOD_56BIT
M128 = security.ENCRYPTION_METHOD_128BIT


@pytest.fixture(scope="module")
def server_key():
    return security.ServerKey.generate(1024)  # small to keep the module fast; clients take 512..2048


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    return tls.create_server_context(tls.ensure_self_signed(tmp_path_factory.mktemp("tls"), "vmhost"))


# --- the client's crypto, from the spec's formulas ------------------------------------------------

class RefRc4:
    """A streaming RC4 written from the algorithm (no shared code with services.vrdp.security)."""

    def __init__(self, key: bytes):
        s = list(range(256))
        j = 0
        for i in range(256):
            j = (j + s[i] + key[i % len(key)]) % 256
            s[i], s[j] = s[j], s[i]
        self.s, self.i, self.j = s, 0, 0

    def update(self, data: bytes) -> bytes:
        s, i, j = self.s, self.i, self.j
        out = bytearray()
        for byte in data:
            i = (i + 1) % 256
            j = (j + s[i]) % 256
            s[i], s[j] = s[j], s[i]
            out.append(byte ^ s[(s[i] + s[j]) % 256])
        self.i, self.j = i, j
        return bytes(out)


class RefDirection:
    def __init__(self, key: bytes, method: int):
        self.initial = self.current = key
        self.method = method
        self.rc4 = RefRc4(key)
        self.used = 0
        self.count = 0
        self.updates = 0

    def crypt(self, data: bytes) -> bytes:
        if self.used == 4096:  # MS-RDPBCGR 5.3.7: a new key before the 4097th packet
            self.current = ref_update(self.initial, self.current, self.method)
            self.rc4 = RefRc4(self.current)
            self.used = 0
            self.updates += 1
        self.used += 1
        self.count += 1
        return self.rc4.update(data)


class RefChannel:
    """The client's half: it encrypts with the server's decrypt key and decrypts with its encrypt key."""

    def __init__(self, method: int, client_random: bytes, server_random: bytes):
        self.mac_key, server_encrypt, server_decrypt = ref_keys(client_random, server_random, method)
        self.out = RefDirection(server_decrypt, method)
        self.inn = RefDirection(server_encrypt, method)

    def seal(self, data: bytes, salted: bool) -> tuple[bytes, bytes]:
        mac = ref_mac(self.mac_key, data, self.out.count if salted else None)
        return mac, self.out.crypt(data)

    def open(self, mac: bytes, data: bytes, salted: bool) -> bytes:
        count = self.inn.count
        plain = self.inn.crypt(data)
        assert mac == ref_mac(self.mac_key, plain, count if salted else None), "server MAC is wrong"
        return plain


TS_MODULUS = int.from_bytes(bytes.fromhex(
    "3d3a5ebd72433ec94dbbc11e4aba5fcb3e882087eff5c1e2d7b76b9af2524595"
    "ce63656b583afeef7ce7bffe3df65c7d6c5e06091af561bb2093095f056dea87"), "little")


def check_proprietary_certificate(cert: bytes) -> tuple[int, int, int]:
    """What mstsc checks (MS-RDPBCGR 5.3.3.1.2), written out: returns (modulus, exponent, size)."""
    version, sig_alg, key_alg, blob_type, blob_len = struct.unpack_from("<IIIHH", cert)
    assert (version, sig_alg, key_alg, blob_type) == (1, 1, 1, 6)
    blob = cert[16:16 + blob_len]
    magic, keylen, bitlen, datalen, exponent = struct.unpack_from("<4sIIII", blob)
    size = keylen - 8
    assert magic == b"RSA1" and bitlen == size * 8 and datalen == size - 1
    modulus = int.from_bytes(blob[20:20 + size], "little")
    assert blob[20 + size:] == bytes(8)
    sig_type, sig_len = struct.unpack_from("<HH", cert, 16 + blob_len)
    assert (sig_type, sig_len) == (8, 72)
    signature = int.from_bytes(cert[20 + blob_len:20 + blob_len + 64], "little")
    opened = pow(signature, 0xC0887B5B, TS_MODULUS).to_bytes(64, "little")
    assert opened[:16] == hashlib.md5(cert[:16 + blob_len]).digest()
    assert opened[16:] == b"\x00" + b"\xff" * 45 + b"\x01" + b"\x00"
    return modulus, exponent, size


# --- a Standard Security client -------------------------------------------------------------------

def connect_initial(base: bytes = XFREERDP_CONNECT_INITIAL, methods: int = M40 | M56 | M128,
                    core_changes: dict | None = None) -> bytes:
    initial = mcs.parse_connect_initial(x224.unwrap_data(base))
    client = gcc.parse_conference_create_request(initial.user_data)
    core = dataclasses.replace(client.core, **(core_changes or {}))
    client = dataclasses.replace(client, core=core, security=gcc.ClientSecurityData(methods, 0))
    initial = dataclasses.replace(initial, user_data=gcc.build_conference_create_request(client))
    return x224.wrap_data(mcs.build_connect_initial(initial))


class StdClient:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.events = []
        self.reader = FrameReader(fastpath=True)
        self.user_id = None
        self.channel: RefChannel | None = None
        self.salted = False
        self.server_security = None

    def raw(self, data: bytes) -> list:
        self.events += self.conn.receive(data)
        self.reader.feed(self.conn.data_to_send())
        return list(self.reader)

    def mcs(self, pdu) -> list:
        return self.raw(x224.wrap_data(mcs.build_domain_pdu(pdu)))

    def io(self, payload: bytes) -> list:
        return self.mcs(mcs.SendDataRequest(self.user_id, mcs.IO_CHANNEL_ID, payload))

    def secure(self, payload: bytes, flags: int = 0, tamper: bool = False) -> list:
        mac, ciphertext = self.channel.seal(payload, self.salted)
        if tamper:
            mac = bytes([mac[0] ^ 1]) + mac[1:]
        flags |= security.SEC_ENCRYPT | (security.SEC_SECURE_CHECKSUM if self.salted else 0)
        return self.io(struct.pack("<HH", flags, 0) + mac + ciphertext)

    def indications(self, frames) -> list[tuple[int, bytes]]:
        """(security flags, plaintext) of each slow-path PDU from the server."""
        out = []
        for frame in frames:
            assert frame.kind is FrameKind.TPKT
            pdu = mcs.parse_domain_pdu(x224.unwrap_data(frame.data))
            assert isinstance(pdu, mcs.SendDataIndication)
            flags = struct.unpack_from("<H", pdu.data)[0]
            if flags & security.SEC_ENCRYPT:
                salted = bool(flags & security.SEC_SECURE_CHECKSUM)
                plain = self.channel.open(pdu.data[4:12], pdu.data[12:], salted)
            else:
                plain = pdu.data[4:]
            out.append((flags, plain))
        return out

    def fastpath_bodies(self, frames) -> list[bytes]:
        bodies = []
        for frame in frames:
            assert frame.kind is FrameKind.FASTPATH
            header = parse_fastpath_header(frame.data)
            assert header.flags & FASTPATH_FLAG_ENCRYPTED, "unencrypted fast-path output"
            body = frame.data[header.header_size:]
            salted = bool(header.flags & FASTPATH_FLAG_SECURE_CHECKSUM)
            bodies.append(self.channel.open(body[:8], body[8:], salted))
        return bodies

    def decrypt(self, frames) -> list[tuple[str, bytes]]:
        """Every server frame in order (one RC4 stream): ("slow", plaintext) or ("fast", body)."""
        out = []
        for frame in frames:
            if frame.kind is FrameKind.TPKT:
                out += [("slow", plain) for _, plain in self.indications([frame])]
            else:
                out += [("fast", body) for body in self.fastpath_bodies([frame])]
        return out

    def fastpath_input(self, events, tamper: bool = False) -> list:
        body = b"".join(rdp_input.encode_fastpath_event(e) for e in events)
        mac, ciphertext = self.channel.seal(body, self.salted)
        if tamper:
            mac = bytes(8)
        flags = FASTPATH_FLAG_ENCRYPTED | (FASTPATH_FLAG_SECURE_CHECKSUM if self.salted else 0)
        return self.raw(build_fastpath(mac + ciphertext, flags=flags, num_events=len(events)))

    # -- phases --

    def negotiate(self, negotiation: bool = True, protocols: int = x224.PROTOCOL_RDP):
        request = x224.ConnectionRequest("tester", negotiation=x224.NegotiationRequest(protocols)
                                         if negotiation else None)
        [frame] = self.raw(build_tpkt(x224.build_connection_request(request)))
        return x224.parse_connection_confirm(parse_tpkt(frame.data))

    def connect(self, initial: bytes) -> gcc.ServerSecurityData:
        [frame] = self.raw(initial)
        response = mcs.parse_connect_response(x224.unwrap_data(frame.data))
        server = gcc.parse_conference_create_response(response.user_data)
        self.server_security = server.security
        assert self.mcs(mcs.ErectDomainRequest()) == []
        [frame] = self.mcs(mcs.AttachUserRequest())
        self.user_id = mcs.parse_domain_pdu(x224.unwrap_data(frame.data)).initiator
        channels = [self.user_id, mcs.IO_CHANNEL_ID, *server.network.channel_ids]
        for channel in channels:
            [frame] = self.mcs(mcs.ChannelJoinRequest(self.user_id, channel))
        return server.security

    def exchange(self, flags: int = security.SEC_EXCHANGE_PKT, client_random: bytes | None = None,
                 encrypt=None) -> bytes:
        modulus, exponent, size = check_proprietary_certificate(self.server_security.server_certificate)
        client_random = client_random or os.urandom(32)
        if encrypt is None:
            encrypted = pow(int.from_bytes(client_random, "little"), exponent, modulus).to_bytes(size, "little")
        else:
            encrypted = encrypt(client_random, modulus, exponent, size)
        assert self.io(struct.pack("<HHI", flags, 0, size + 8) + encrypted + bytes(8)) == []
        self.channel = RefChannel(self.server_security.encryption_method, client_random,
                                  self.server_security.server_random)
        return client_random

    def client_info(self, rdp5: bool = True):
        client_info = info.ClientInfo(user_name="alice", password="secret", domain="@2",
                                      extended=info.ExtendedInfo(client_address="127.0.0.1") if rdp5 else None)
        return self.indications(self.secure(info.build_client_info(client_info), security.SEC_INFO_PKT))

    def activate(self, bpp: int = 32, fastpath: bool = True, salted: bool = True):
        replies = self.client_info()
        (licence_flags, licence), (demand_flags, demand) = replies
        assert licence_flags & security.SEC_LICENSE_PKT
        assert licence == info.build_license_valid_client()[4:]
        assert demand_flags & security.SEC_ENCRYPT
        demand = capabilities.parse_demand_active(demand)
        sets = client_caps(bpp, fastpath)
        if salted:
            general = next(s for s in demand.capability_sets if s.cap_type == capabilities.CAPSTYPE_GENERAL)
            assert capabilities.client_capabilities([general]).salted_checksum
            extra = (capabilities.NO_BITMAP_COMPRESSION_HDR | capabilities.ENC_SALTED_CHECKSUM
                     | (capabilities.FASTPATH_OUTPUT_SUPPORTED if fastpath else 0))
            sets[0] = capabilities.general_capability(extra)
        replies = self.indications(self.secure(capabilities.build_confirm_active(sets, demand.share_id,
                                                                                  self.user_id)))
        assert [share.parse_data_pdu(p).pdu_type2 for _, p in replies] == [share.PDUTYPE2_SYNCHRONIZE,
                                                                           share.PDUTYPE2_CONTROL]
        self.salted = salted
        assert self.secure(activation.build_synchronize(1002, demand.share_id, self.user_id)) == []
        assert self.secure(activation.build_control(activation.CTRLACTION_COOPERATE, 0, 0, demand.share_id,
                                                    self.user_id)) == []
        [(_, granted)] = self.indications(self.secure(activation.build_control(
            activation.CTRLACTION_REQUEST_CONTROL, 0, 0, demand.share_id, self.user_id)))
        assert activation.parse_control(share.parse_data_pdu(granted).payload).action == \
            activation.CTRLACTION_GRANTED_CONTROL
        frames = self.secure(activation.build_font_list(demand.share_id, self.user_id))
        assert self.conn.state is State.ACTIVE
        return demand, frames


def standard_conn(server_key, **options) -> Connection:
    return Connection(ConnectionConfig(None, server_key=server_key, desktop_size=lambda: (720, 400), **options))


# --- the whole sequence ---------------------------------------------------------------------------

@pytest.mark.parametrize("negotiation", [True, False], ids=["RDP_NEG_REQ", "rdp4-style"])
@pytest.mark.parametrize("offer,chosen", [(M40 | M56 | M128, M128), (M40 | M56, M56), (M40, M40)])
def test_full_standard_security_sequence(server_key, negotiation, offer, chosen):
    conn = standard_conn(server_key, min_encryption=M40)
    client = StdClient(conn)
    confirm = client.negotiate(negotiation)
    assert confirm.result == (x224.NegotiationResponse(x224.PROTOCOL_RDP) if negotiation else None)
    sec_data = client.connect(connect_initial(methods=offer))
    assert sec_data.encryption_method == chosen
    assert sec_data.encryption_level == security.ENCRYPTION_LEVEL_CLIENT_COMPATIBLE
    assert len(sec_data.server_random) == 32
    assert conn.state is State.SECURITY_EXCHANGE
    client.exchange()
    demand, frames = client.activate()
    [(flags, font_map)] = client.indications(frames)
    assert flags & security.SEC_SECURE_CHECKSUM, "salted MACs once both sides announced them"
    assert share.parse_data_pdu(font_map).pdu_type2 == share.PDUTYPE2_FONTMAP
    assert rdp.ClientInfoReceived("alice", "secret", "@2", "vm") in client.events
    assert client.events[-1] == rdp.Activated(720, 400, 32)
    # input, slow path and fast path
    client.events.clear()
    key = rdp_input.KeyboardEvent(0x1E, release=False)
    client.secure(share.build_share_data(demand.share_id, client.user_id, share.PDUTYPE2_INPUT,
                                         rdp_input.build_input_pdu([key])))
    client.fastpath_input([rdp_input.MouseEvent(rdp_input.PTR_FLAGS_MOVE, 10, 20)])
    assert [type(e).__name__ for e in client.events] == ["KeyboardEvent", "MouseEvent"]
    assert client.events[1].x == 10 and client.events[1].y == 20
    # output: encrypted fast-path bitmaps draw the frame exactly
    frame = frame_pattern(400, 720)
    conn.send_bitmaps(frame, [(0, 0, 720, 400)])
    client.reader.feed(conn.data_to_send())
    canvas = np.zeros((400, 720, 3), np.uint8)
    pending = b""
    for body in client.fastpath_bodies(list(client.reader)):
        for update in output.parse_fastpath_updates(body):
            pending += update.data
            if update.fragmentation in (output.FASTPATH_FRAGMENT_SINGLE, output.FASTPATH_FRAGMENT_LAST):
                for rect in output.parse_bitmap_update_data(pending):
                    paint(canvas, rect, 32)
                pending = b""
    assert (canvas == frame[..., :3]).all()


def test_rdp4_client_and_slow_path_output(server_key):
    """rdesktop -4's own Connect-Initial (RDP 4 core data, no fast path): slow-path encrypted updates."""
    conn = standard_conn(server_key)
    client = StdClient(conn)
    assert client.negotiate(negotiation=False).result is None
    sec_data = client.connect(connect_initial(RDESKTOP4_CONNECT_INITIAL, M40 | M128))
    assert sec_data.encryption_method == M128
    client.exchange()
    _, frames = client.activate(bpp=16, fastpath=False, salted=False)
    client.indications(frames)
    conn.send_bitmaps(frame_pattern(400, 720), [(0, 0, 64, 64)])
    client.reader.feed(conn.data_to_send())
    replies = client.indications(list(client.reader))
    assert replies and all(flags & security.SEC_ENCRYPT and not flags & security.SEC_SECURE_CHECKSUM
                           for flags, _ in replies)
    assert share.parse_data_pdu(replies[0][1]).pdu_type2 == share.PDUTYPE2_UPDATE


def test_slow_path_updates_leave_room_for_the_security_header(server_key):
    """Noise fills an update to its budget: with the 12-byte security header the Send Data
    Indication must still fit PER's 2-byte length (this once dropped the client)."""
    conn = standard_conn(server_key)
    client = StdClient(conn)
    client.negotiate(negotiation=False)
    client.connect(connect_initial(RDESKTOP4_CONNECT_INITIAL, M40 | M128))
    client.exchange()
    _, frames = client.activate(bpp=16, fastpath=False, salted=False)
    client.indications(frames)
    noise = np.random.default_rng(7).integers(0, 256, (400, 720, 4), dtype=np.uint8)
    conn.send_bitmaps(noise, [(0, 0, 64, 64), (100, 0, 64, 63), (200, 0, 4, 6)])
    client.reader.feed(conn.data_to_send())
    replies = client.indications(list(client.reader))
    assert len(replies) >= 2 and not conn.closed
    canvas = np.zeros((400, 720, 3), np.uint8)
    for _, data in replies:
        for rect in output.parse_bitmap_update_data(share.parse_data_pdu(data).payload):
            paint(canvas, rect, 16)
    expected = convert.quantise(noise, 16)[..., :3]
    for x, y, w, h in [(0, 0, 64, 64), (100, 0, 64, 63), (200, 0, 4, 6)]:
        assert (canvas[y:y + h, x:x + w] == expected[y:y + h, x:x + w]).all()


def test_licence_encrypted_when_the_client_allows_it(server_key):
    conn = standard_conn(server_key)
    client = StdClient(conn)
    client.negotiate()
    client.connect(connect_initial())
    client.exchange(security.SEC_EXCHANGE_PKT | security.SEC_LICENSE_ENCRYPT)
    (licence_flags, licence), _ = client.client_info()
    assert licence_flags == security.SEC_LICENSE_PKT | security.SEC_ENCRYPT
    assert licence == info.build_license_valid_client()[4:]


def test_key_update_after_4096_packets_both_ways(server_key):
    conn = standard_conn(server_key)
    client = StdClient(conn)
    client.negotiate()
    client.connect(connect_initial())
    client.exchange()
    _, frames = client.activate()
    client.decrypt(frames)
    client.events.clear()
    for index in range(4200):
        client.fastpath_input([rdp_input.MouseEvent(rdp_input.PTR_FLAGS_MOVE, index % 700, 1)])
    assert client.channel.out.updates == 1
    assert len(client.events) == 4200 and client.events[-1].x == 4199 % 700
    frame = frame_pattern(400, 720)
    for _ in range(4200):
        conn.send_bitmaps(frame, [(0, 0, 4, 4)])
    client.reader.feed(conn.data_to_send())
    bodies = client.fastpath_bodies(list(client.reader))  # every MAC checked, across the update
    assert client.channel.inn.updates == 1 and len(bodies) == 4200


def test_client_random_encrypted_by_freerdp_is_recovered(server_key):
    """FreeRDP's crypto_rsa_public_encrypt (what xfreerdp /sec:rdp runs) as the oracle for RDP's
    little-endian raw RSA."""
    path = ctypes.util.find_library("freerdp2") or "libfreerdp2.so.2"
    try:
        freerdp = ctypes.CDLL(path)
    except OSError:
        pytest.fail("libfreerdp2 is missing: apt-get install libfreerdp2-2")
    encrypt_fn = freerdp.crypto_rsa_public_encrypt
    encrypt_fn.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_char_p]
    encrypt_fn.restype = ctypes.c_int

    def freerdp_encrypt(client_random, modulus, exponent, size):
        out = ctypes.create_string_buffer(size + 8)
        length = encrypt_fn(client_random, 32, size, modulus.to_bytes(size, "little"),
                            exponent.to_bytes(4, "little"), out)
        assert length > 0
        return out.raw[:size]

    for _ in range(3):
        conn = standard_conn(server_key)
        client = StdClient(conn)
        client.negotiate()
        client.connect(connect_initial())
        client.exchange(encrypt=freerdp_encrypt)
        client.activate()  # keys from the recovered random: every MAC on both sides checks


# --- refusals and malformed input ------------------------------------------------------------------

def connected_before_exchange(server_key):
    conn = standard_conn(server_key)
    client = StdClient(conn)
    client.negotiate()
    client.connect(connect_initial())
    return conn, client


def exchange_payload(client, length_delta=0, body=None, flags=security.SEC_EXCHANGE_PKT):
    _, _, size = check_proprietary_certificate(client.server_security.server_certificate)
    body = os.urandom(size) if body is None else body
    return struct.pack("<HHI", flags, 0, size + 8 + length_delta) + body + bytes(8)


@pytest.mark.parametrize("case", ["no-exchange-flag", "length", "truncated", "out-of-range", "header-only",
                                  "other-channel", "client-info-first"])
def test_malformed_security_exchange_closes_that_connection(server_key, case):
    conn, client = connected_before_exchange(server_key)
    size = check_proprietary_certificate(client.server_security.server_certificate)[2]
    payloads = {
        "no-exchange-flag": exchange_payload(client, flags=security.SEC_INFO_PKT),
        "length": exchange_payload(client, length_delta=3),
        "truncated": exchange_payload(client)[:40],
        "out-of-range": exchange_payload(client, body=b"\xff" * size),
        "header-only": b"\x01\x00",
        "client-info-first": (struct.pack("<HH", security.SEC_INFO_PKT, 0)
                              + info.build_client_info(info.ClientInfo())),
    }
    with pytest.raises(ProtocolError) as error:
        if case == "other-channel":
            client.mcs(mcs.SendDataRequest(client.user_id, mcs.IO_CHANNEL_ID + 1, exchange_payload(client)))
        else:
            client.io(payloads[case])
    assert str(error.value) and "\n" not in str(error.value)
    assert conn.closed
    # The next client of the same server key is unaffected.
    _, client2 = connected_before_exchange(server_key)
    client2.exchange()
    client2.activate()


@pytest.mark.parametrize("case", ["bad-mac", "unencrypted", "bad-fastpath-mac", "plain-fastpath"])
def test_tampered_or_unencrypted_pdus_after_the_exchange_are_refused(server_key, case):
    conn, client = connected_before_exchange(server_key)
    client.exchange()
    payload = info.build_client_info(info.ClientInfo(user_name="u"))
    with pytest.raises(ProtocolError, match="MAC|unencrypted"):
        if case == "bad-mac":
            client.secure(payload, security.SEC_INFO_PKT, tamper=True)
        elif case == "unencrypted":
            client.io(struct.pack("<HH", security.SEC_INFO_PKT, 0) + payload)
        else:
            client.activate()
            if case == "bad-fastpath-mac":
                client.fastpath_input([rdp_input.SyncEvent(0)], tamper=True)
            else:
                client.raw(rdp_input.build_fastpath_input([rdp_input.SyncEvent(0)]))
    assert conn.closed


def test_fips_only_and_too_weak_clients_are_refused_clearly(server_key):
    for methods, minimum, message in [(security.ENCRYPTION_METHOD_FIPS, M40, "only FIPS"),
                                      (M40 | M56, M128, "no RC4 encryption of at least 128 bits"),
                                      (0, M40, "no RC4 encryption")]:
        conn = standard_conn(server_key, min_encryption=minimum)
        client = StdClient(conn)
        client.negotiate()
        with pytest.raises(ProtocolError, match=message):
            client.raw(connect_initial(methods=methods))
        assert conn.closed and conn.data_to_send() == b""


# --- negotiation per Security/Method --------------------------------------------------------------

NO_NEG = None
CASES = [  # (request, expected per method: RDP, TLS, NEGOTIATE, TLS with a broken certificate)
    (NO_NEG, ["rdp", x224.SSL_REQUIRED_BY_SERVER, "rdp", "rdp"]),
    (x224.PROTOCOL_RDP, ["rdp", x224.SSL_REQUIRED_BY_SERVER, "rdp", "rdp"]),
    (x224.PROTOCOL_SSL, [x224.SSL_NOT_ALLOWED_BY_SERVER, "tls", "tls", x224.SSL_CERT_NOT_ON_SERVER]),
    (x224.PROTOCOL_SSL | x224.PROTOCOL_HYBRID, [x224.SSL_NOT_ALLOWED_BY_SERVER, "tls", "tls",
                                                x224.SSL_CERT_NOT_ON_SERVER]),
    (x224.PROTOCOL_HYBRID, [x224.SSL_REQUIRED_BY_SERVER] * 4),
]


@pytest.mark.parametrize("request_protocols,expected", CASES)
def test_negotiation_per_security_method(server_key, tls_context, request_protocols, expected):
    configs = [ConnectionConfig(None, server_key=server_key), ConnectionConfig(tls_context),
               ConnectionConfig(tls_context, server_key=server_key),
               ConnectionConfig(None, tls_error="cannot read", server_key=server_key)]
    for config, want in zip(configs, expected, strict=True):
        conn = Connection(config)
        client = StdClient(conn)
        confirm = client.negotiate(request_protocols is not NO_NEG, request_protocols or 0)
        if want == "rdp":
            assert conn.state is State.CONNECT_INITIAL and confirm.result in (
                None, x224.NegotiationResponse(x224.PROTOCOL_RDP))
        elif want == "tls":
            assert confirm.result.selected_protocol == x224.PROTOCOL_SSL and conn.state is State.TLS_HANDSHAKE
        else:
            assert confirm.result == x224.NegotiationFailure(want)
            assert client.events == [rdp.Refused(request_protocols or 0, want)] and conn.closed


def test_policy_from_vrde_properties(tmp_path, caplog):
    state = tmp_path / "state"
    default = security_policy.security_policy_from({}, state)
    assert (default.method, default.server_key, default.tls_error) == ("TLS", None, None)
    assert default.tls_context.minimum_version.name == "TLSv1_2"
    both = security_policy.security_policy_from({"Security/Method": "negotiate", "Security/TLSMinVersion": "1.3",
                                                 "Security/RDPMinEncryption": "56"}, state)
    assert both.method == "NEGOTIATE" and both.server_key is not None and both.min_encryption == M56
    assert both.tls_context.minimum_version.name == "TLSv1_3"
    config = both.connection_config(desktop_size=lambda: (640, 480), max_bpp=16)
    assert config.server_key is both.server_key and config.max_bpp == 16
    rdp_only = security_policy.security_policy_from({"Security/Method": "RDP"}, state, server_key=both.server_key)
    assert rdp_only.tls_context is None and rdp_only.tls_error is None
    unknown = security_policy.security_policy_from({"Security/Method": "Kerberos"}, state)
    assert unknown.method == "TLS" and "Unsupported 'Security/Method' = 'Kerberos'." in caplog.text
    broken = security_policy.security_policy_from(
        {"Security/Method": "NEGOTIATE", "Security/ServerCertificate": str(tmp_path / "nope.pem"),
         "Security/ServerPrivateKey": str(tmp_path / "nope.key")}, state, server_key=both.server_key)
    assert broken.tls_context is None and "nope.pem" in broken.tls_error
    assert "TLS is not available, TLS clients are refused" in caplog.text
    bad_version = security_policy.security_policy_from({"Security/TLSMinVersion": "2.0"}, state)
    assert bad_version.tls_context is None and "TLSMinVersion '2.0'" in bad_version.tls_error


# --- colour depths -------------------------------------------------------------------------------

@pytest.mark.parametrize("high,supported,want", [
    (24, gcc.RNS_UD_24BPP_SUPPORT | gcc.RNS_UD_16BPP_SUPPORT, 24),
    (15, gcc.RNS_UD_15BPP_SUPPORT, 15),
    (8, 0, 8),
    (16, gcc.RNS_UD_16BPP_SUPPORT, 16),
])
def test_depth_is_one_the_client_announced_and_8_bpp_gets_the_palette_first(server_key, high, supported, want):
    conn = standard_conn(server_key)
    client = StdClient(conn)
    client.negotiate()
    client.connect(connect_initial(core_changes={"high_color_depth": high, "supported_color_depths": supported,
                                                 "early_capability_flags": 0}))
    client.exchange()
    _, frames = client.activate(bpp=want)
    assert client.events[-1] == rdp.Activated(720, 400, want)
    assert conn.bpp == want
    replies = client.decrypt(frames)
    assert replies[0][0] == "slow" and share.parse_data_pdu(replies[0][1]).pdu_type2 == share.PDUTYPE2_FONTMAP
    if want == 8:
        [(kind, palette)] = replies[1:]
        assert kind == "fast"
        [update] = output.parse_fastpath_updates(palette)
        assert update.code == output.FASTPATH_UPDATETYPE_PALETTE
        assert update.data == convert.palette_update_data()
    else:
        assert len(replies) == 1


def test_max_bpp_never_picks_an_unannounced_depth(server_key):
    conn = Connection(ConnectionConfig(None, server_key=server_key, max_bpp=24))
    core = gcc.ClientCoreData(high_color_depth=24, supported_color_depths=gcc.RNS_UD_32BPP_SUPPORT
                              | gcc.RNS_UD_16BPP_SUPPORT, early_capability_flags=gcc.RNS_UD_CS_WANT_32BPP_SESSION,
                              post_beta2_color_depth=0xCA01, client_product_id=1, serial_number=0)
    # wants 32, capped at 24, and 24 was not announced in supportedColorDepths: 16 it is
    assert conn._choose_bpp(core) == 16


def test_rc4_matches_freerdp_for_rdp_key_lengths():
    """WinPR's RC4 (what xfreerdp encrypts with) as the oracle for the 8-byte salted and 16-byte keys."""
    path = ctypes.util.find_library("winpr2") or "libwinpr2.so.2"
    try:
        winpr = ctypes.CDLL(path)
    except OSError:
        pytest.fail("libwinpr2 is missing: apt-get install libwinpr2-2")
    winpr.winpr_InitializeSSL.argtypes = [ctypes.c_uint32]
    assert winpr.winpr_InitializeSSL(0)  # loads OpenSSL 3's legacy provider, as xfreerdp does
    winpr.winpr_RC4_New.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    winpr.winpr_RC4_New.restype = ctypes.c_void_p
    winpr.winpr_RC4_Update.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_char_p]
    winpr.winpr_RC4_Free.argtypes = [ctypes.c_void_p]
    client_random, server_random = os.urandom(32), os.urandom(32)
    for method in (M40, M56, M128):
        keys = security.derive_session_keys(client_random, server_random, method)
        key = keys.encrypt_key
        ours = security.Rc4(key)
        context = winpr.winpr_RC4_New(key, len(key))
        assert context
        try:
            for size in (1, 100, 5000):
                data = os.urandom(size)
                out = ctypes.create_string_buffer(size)
                assert winpr.winpr_RC4_Update(context, size, data, out)
                assert ours.update(data) == out.raw
        finally:
            winpr.winpr_RC4_Free(context)


def test_fuzz_security_exchange_and_first_encrypted_pdu(server_key):
    """Mutated exchanges: a ProtocolError for that connection or a clean accept, never another
    exception; any bit flipped in the signature or ciphertext of the Client Info is refused."""
    conn, client = connected_before_exchange(server_key)
    seeds = [exchange_payload(client)]
    for data in mutations(seeds, 150, seed=7):
        conn, client = connected_before_exchange(server_key)
        try:
            client.io(bytes(data))
        except ProtocolError:
            assert conn.closed
    client_random = os.urandom(32)
    for index in range(60):
        conn, client = connected_before_exchange(server_key)
        client.exchange(client_random=client_random)
        mac, ciphertext = client.channel.seal(info.build_client_info(info.ClientInfo(user_name="u")), False)
        pdu = bytearray(struct.pack("<HH", security.SEC_INFO_PKT | security.SEC_ENCRYPT, 0) + mac + ciphertext)
        pdu[4 + index * 7 % (len(pdu) - 4)] ^= 1 << (index % 8)  # signature or ciphertext
        with pytest.raises(ProtocolError):
            client.io(bytes(pdu))
        assert conn.closed
