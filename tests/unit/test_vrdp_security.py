"""Standard RDP Security: key derivation, RC4, MACs, key updates, the proprietary certificate and headers
checked against published RC4 vectors and a second, literal transcription of MS-RDPBCGR 5.3
(tests/support/rdp_security_reference.py)."""

import hashlib
import os
import random
import struct

import pytest

from services.vrdp import security as sec
from services.vrdp.security import ProtocolError
from tests.support.rdp_security_reference import ref_keys, ref_mac, ref_rc4, ref_update

CLIENT_RANDOM = bytes(range(0x20, 0x40))
SERVER_RANDOM = bytes(range(0xA0, 0xC0))
METHODS = [sec.ENCRYPTION_METHOD_40BIT, sec.ENCRYPTION_METHOD_56BIT, sec.ENCRYPTION_METHOD_128BIT]


# --- RC4 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pure", [False, True])
@pytest.mark.parametrize("key,plain,cipher", [
    # The classic published vectors (Wikipedia "RC4", test vectors section).
    (b"Key", b"Plaintext", "bbf316e8d940af0ad3"),
    (b"Wiki", b"pedia", "1021bf0420"),
    (b"Secret", b"Attack at dawn", "45a01f645fc35b383552544b9bf5"),
])
def test_rc4_published_vectors(pure, key, plain, cipher):
    assert sec.Rc4(key, pure_python=pure).update(plain).hex() == cipher


@pytest.mark.parametrize("pure", [False, True])
def test_rc4_rfc6229_keystream(pure):
    # RFC 6229, 40-bit key 0x0102030405, keystream at offsets 0 and 16.
    stream = sec.Rc4(bytes.fromhex("0102030405"), pure_python=pure).update(bytes(32))
    assert stream.hex() == ("b2396305f03dc027ccc3524a0a1118a8"
                            "6982944f18fc82d589c403a47a0d0919")


def test_rc4_is_one_stream_across_calls_and_backends_agree():
    data = os.urandom(3000)
    fast, pure = sec.Rc4(b"0123456789abcdef"), sec.Rc4(b"0123456789abcdef", pure_python=True)
    chunks = [data[:1], data[1:1000], data[1000:]]
    assert b"".join(fast.update(c) for c in chunks) == b"".join(pure.update(c) for c in chunks)
    assert sec.rc4(b"0123456789abcdef", data) == ref_rc4(b"0123456789abcdef", data)


# --- key derivation -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_session_keys_match_spec_formulas(method):
    for client_random, server_random in [(CLIENT_RANDOM, SERVER_RANDOM),
                                         (os.urandom(32), os.urandom(32))]:
        keys = sec.derive_session_keys(client_random, server_random, method)
        assert (keys.mac_key, keys.encrypt_key, keys.decrypt_key) == \
            ref_keys(client_random, server_random, method)


def test_reductions_40_56_128():
    key = bytes(range(1, 17))
    assert sec.reduce_key(key, sec.ENCRYPTION_METHOD_40BIT) == bytes([0xD1, 0x26, 0x9E, 4, 5, 6, 7, 8])
    assert sec.reduce_key(key, sec.ENCRYPTION_METHOD_56BIT) == bytes([0xD1, 2, 3, 4, 5, 6, 7, 8])
    assert sec.reduce_key(key, sec.ENCRYPTION_METHOD_128BIT) == key
    with pytest.raises(ValueError):
        sec.reduce_key(key, sec.ENCRYPTION_METHOD_FIPS)
    k40 = sec.derive_session_keys(CLIENT_RANDOM, SERVER_RANDOM, sec.ENCRYPTION_METHOD_40BIT)
    k128 = sec.derive_session_keys(CLIENT_RANDOM, SERVER_RANDOM, sec.ENCRYPTION_METHOD_128BIT)
    assert k40.encrypt_key[3:] == k128.encrypt_key[3:8] and k40.mac_key[:3] == b"\xd1\x26\x9e"


def test_randoms_are_not_interchangeable():
    # The session keys use ClientRandom + ServerRandom order; swapping must change every key.
    a = sec.derive_session_keys(CLIENT_RANDOM, SERVER_RANDOM, sec.ENCRYPTION_METHOD_128BIT)
    b = sec.derive_session_keys(SERVER_RANDOM, CLIENT_RANDOM, sec.ENCRYPTION_METHOD_128BIT)
    assert a.mac_key != b.mac_key and a.encrypt_key != b.encrypt_key


@pytest.mark.parametrize("method", METHODS)
def test_key_update_matches_spec(method):
    keys = sec.derive_session_keys(CLIENT_RANDOM, SERVER_RANDOM, method)
    once = sec.update_key(keys.encrypt_key, keys.encrypt_key, method)
    assert once == ref_update(keys.encrypt_key, keys.encrypt_key, method)
    twice = sec.update_key(keys.encrypt_key, once, method)
    assert twice == ref_update(keys.encrypt_key, once, method) and twice != once
    assert len(once) == len(keys.encrypt_key)


# --- MAC ------------------------------------------------------------------------------------------

def test_mac_signatures():
    key = sec.derive_session_keys(CLIENT_RANDOM, SERVER_RANDOM, sec.ENCRYPTION_METHOD_128BIT).mac_key
    data = b"\x00\x01hello RDP"
    assert sec.mac_signature(key, data) == ref_mac(key, data)
    assert sec.salted_mac_signature(key, data, 0) == ref_mac(key, data, 0)
    assert sec.salted_mac_signature(key, data, 4097) == ref_mac(key, data, 4097)
    assert sec.salted_mac_signature(key, data, 1) != sec.salted_mac_signature(key, data, 2)


# --- the secure channel ---------------------------------------------------------------------------

def pair(method, salted=False):
    server = sec.SecureChannel(method, CLIENT_RANDOM, SERVER_RANDOM, salted_mac=salted)
    client = sec.SecureChannel(method, CLIENT_RANDOM, SERVER_RANDOM, server_side=False,
                               salted_mac=salted)
    return server, client


@pytest.mark.parametrize("method", METHODS)
def test_wrap_matches_reference_first_packet(method):
    server, _ = pair(method)
    mac_key, enc_key, _dec = ref_keys(CLIENT_RANDOM, SERVER_RANDOM, method)
    flags, mac, encrypted = server.wrap(b"first PDU")
    assert flags == sec.SEC_ENCRYPT
    assert mac == ref_mac(mac_key, b"first PDU")
    assert encrypted == ref_rc4(enc_key, b"first PDU")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("salted", [False, True])
def test_5000_packets_cross_the_key_update(method, salted):
    server, client = pair(method, salted)
    rng = random.Random(method * 2 + salted)
    for n in range(5000):
        payload = rng.randbytes(rng.randrange(0, 40))
        flags, mac, encrypted = server.wrap(payload)
        assert bool(flags & sec.SEC_SECURE_CHECKSUM) == salted
        assert client.unwrap(flags, mac + encrypted) == payload, n
        # and the other direction, through whole PDUs with headers
        pdu = client.encrypt_pdu(payload, sec.SEC_INFO_PKT if n == 0 else 0)
        header = sec.parse_security_header(pdu)
        assert server.unwrap(header.flags, header.signature + header.body) == payload


def test_key_update_happens_at_packet_4097_per_reference():
    method = sec.ENCRYPTION_METHOD_128BIT
    server, _ = pair(method)
    _mac, enc_key, _dec = ref_keys(CLIENT_RANDOM, SERVER_RANDOM, method)
    stream = ref_rc4(enc_key, bytes(4096))
    for n in range(4096):
        assert server.wrap(b"\x00")[2] == stream[n:n + 1]
    new_key = ref_update(enc_key, enc_key, method)
    assert server.wrap(b"\x00" * 4)[2] == ref_rc4(new_key, bytes(4))


def test_salted_mac_counts_packets_across_updates():
    server, _ = pair(sec.ENCRYPTION_METHOD_128BIT, salted=True)
    for _ in range(4100):
        server.wrap(b"x")
    mac_key = ref_keys(CLIENT_RANDOM, SERVER_RANDOM, sec.ENCRYPTION_METHOD_128BIT)[0]
    assert server.wrap(b"payload")[1] == ref_mac(mac_key, b"payload", 4100)


def test_unwrap_rejects_tampering_and_unencrypted():
    server, client = pair(sec.ENCRYPTION_METHOD_128BIT)
    flags, mac, encrypted = client.wrap(b"secret data")
    bad = bytearray(encrypted)
    bad[0] ^= 1
    with pytest.raises(ProtocolError):
        server.unwrap(flags, mac + bytes(bad))
    with pytest.raises(ProtocolError):
        server.unwrap(0, mac + encrypted)
    with pytest.raises(ProtocolError):
        server.unwrap(sec.SEC_ENCRYPT, b"short")
    # a salted flag on a non-salted MAC does not verify either
    server2, client2 = pair(sec.ENCRYPTION_METHOD_128BIT)
    flags, mac, encrypted = client2.wrap(b"data")
    with pytest.raises(ProtocolError):
        server2.unwrap(flags | sec.SEC_SECURE_CHECKSUM, mac + encrypted)


def test_fast_path_seal_and_open_share_the_stream():
    server, client = pair(sec.ENCRYPTION_METHOD_56BIT)
    mac, ct = server.seal(b"fast", salted=True)
    assert client.open(mac, ct, salted=True) == b"fast"
    flags, mac, ct = server.wrap(b"slow")
    assert client.unwrap(flags, mac + ct) == b"slow"


# --- RSA: the proprietary certificate and the client random ---------------------------------------

def test_ts_key_constants_are_a_key_pair():
    # MS-RDPBCGR 5.3.3.1.1 prints these; they must invert each other and be 512 bits.
    assert sec.TS_MODULUS.bit_length() == 512
    assert sec.TS_PUBLIC_EXPONENT == 0xC0887B5B
    for m in (2, 0x1234567890ABCDEF, sec.TS_MODULUS - 2):
        assert pow(pow(m, sec.TS_PRIVATE_EXPONENT, sec.TS_MODULUS), sec.TS_PUBLIC_EXPONENT,
                   sec.TS_MODULUS) == m


@pytest.fixture(scope="module")
def server_key():
    return sec.ServerKey.generate()


def test_proprietary_certificate_layout_and_signature(server_key):
    blob = server_key.certificate
    version, sig_alg, key_alg, blob_type, blob_len = struct.unpack_from("<IIIHH", blob)
    assert (version, sig_alg, key_alg, blob_type) == (1, 1, 1, 6)
    key = blob[16:16 + blob_len]
    assert key[:4] == b"RSA1"
    keylen, bitlen, datalen, exponent = struct.unpack_from("<IIII", key, 4)
    assert (keylen, bitlen, datalen, exponent) == (264, 2048, 255, 65537)
    assert int.from_bytes(key[20:276], "little") == server_key.modulus and key[276:] == bytes(8)
    sig_type, sig_len = struct.unpack_from("<HH", blob, 16 + blob_len)
    assert (sig_type, sig_len) == (8, 72) and len(blob) == 16 + blob_len + 4 + 72
    signature = blob[16 + blob_len + 4:]
    assert signature[64:] == bytes(8)
    # Verify independently with the spec's public TS key: MD5 + 0x00 + 45 x 0xFF + 0x01.
    opened = pow(int.from_bytes(signature[:64], "little"), sec.TS_PUBLIC_EXPONENT,
                 sec.TS_MODULUS).to_bytes(64, "little")
    assert opened[:16] == hashlib.md5(blob[:16 + blob_len]).digest()
    assert opened[16:] == b"\x00" + b"\xff" * 45 + b"\x01\x00"
    parsed = sec.parse_proprietary_certificate(blob)
    assert parsed.signature_valid() and parsed.modulus == server_key.modulus


def test_tampered_certificate_fails_verification(server_key):
    blob = bytearray(server_key.certificate)
    blob[100] ^= 0xFF  # inside the modulus (it starts at byte 36)
    assert not sec.parse_proprietary_certificate(bytes(blob)).signature_valid()


def test_client_random_decrypts_like_a_client_encrypts(server_key):
    client_random = os.urandom(32)
    # What FreeRDP/rdesktop do: reverse to big-endian, raw BN_mod_exp, reverse back, pad 8 zeros.
    n, e, size = server_key.modulus, server_key.exponent, server_key.size
    value = pow(int.from_bytes(client_random[::-1], "big"), e, n)
    encrypted = value.to_bytes(size, "big")[::-1] + bytes(8)
    assert encrypted == sec.encrypt_client_random(client_random, n, e, size)
    pdu = sec.build_security_header(sec.SEC_EXCHANGE_PKT | sec.SEC_LICENSE_ENCRYPT) + \
        struct.pack("<I", size + 8) + encrypted
    state = sec.StandardSecurity(server_key, sec.ENCRYPTION_METHOD_128BIT)
    channel = state.accept_security_exchange(pdu)
    client = sec.SecureChannel(sec.ENCRYPTION_METHOD_128BIT, client_random, state.server_random,
                               server_side=False)
    flags, mac, ct = client.wrap(b"Client Info")
    assert channel.unwrap(flags, mac + ct) == b"Client Info"


def test_security_exchange_rejects_bad_input(server_key):
    state = sec.StandardSecurity(server_key, sec.ENCRYPTION_METHOD_128BIT)
    size = server_key.size
    for pdu in [b"", b"\x01\x00", b"\x08\x00\x00\x00" + struct.pack("<I", size + 8) + bytes(size + 8),
                b"\x01\x00\x00\x00" + struct.pack("<I", 64 + 8) + bytes(72),
                b"\x01\x00\x00\x00" + struct.pack("<I", size + 8) + bytes(size),
                b"\x01\x00\x00\x00" + struct.pack("<I", size + 8) + b"\xff" * (size + 8)]:
        with pytest.raises(ProtocolError):
            state.accept_security_exchange(pdu)


def test_select_encryption_method():
    assert sec.select_encryption_method(0x0B) == sec.ENCRYPTION_METHOD_128BIT
    assert sec.select_encryption_method(0x09) == sec.ENCRYPTION_METHOD_56BIT
    assert sec.select_encryption_method(0, 0x01) == sec.ENCRYPTION_METHOD_40BIT
    assert sec.select_encryption_method(sec.ENCRYPTION_METHOD_FIPS) == sec.ENCRYPTION_METHOD_NONE


def test_standard_security_refuses_fips_and_none(server_key):
    for method in (sec.ENCRYPTION_METHOD_NONE, sec.ENCRYPTION_METHOD_FIPS):
        with pytest.raises(ValueError):
            sec.StandardSecurity(server_key, method)


# --- headers and fuzzing --------------------------------------------------------------------------

def test_security_header_round_trip():
    assert sec.build_security_header(sec.SEC_INFO_PKT) == b"\x40\x00\x00\x00"
    pdu = sec.build_security_header(sec.SEC_ENCRYPT, b"ABCDEFGH") + b"body"
    header = sec.parse_security_header(pdu)
    assert (header.flags, header.flags_hi, header.signature, header.body) == \
        (sec.SEC_ENCRYPT, 0, b"ABCDEFGH", b"body")
    # Under TLS SEC_ENCRYPT never appears, and no signature is read even if a client sets it.
    assert sec.parse_security_header(pdu, encrypted_session=False).signature is None


def test_fuzz_parsers_raise_protocol_error_only(server_key):
    rng = random.Random(1234)
    state = sec.StandardSecurity(server_key, sec.ENCRYPTION_METHOD_128BIT)
    server, _ = pair(sec.ENCRYPTION_METHOD_128BIT)
    cert = server_key.certificate
    for _ in range(3000):
        kind = rng.randrange(3)
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 24))
        elif kind == 1:
            data = bytearray(cert[:rng.randrange(0, len(cert) + 1)])
            for _ in range(rng.randrange(0, 4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        else:
            data = b"\x01\x00\x00\x00" + struct.pack("<I", rng.choice([0, 256, 264, 2 ** 32 - 1])) + \
                rng.randbytes(rng.randrange(0, 300))
        for parse in (sec.parse_security_header, sec.parse_proprietary_certificate,
                      state.accept_security_exchange,
                      lambda d: server.unwrap(d[0] if d else 0, d)):
            try:
                parse(data)
            except ProtocolError:
                pass
