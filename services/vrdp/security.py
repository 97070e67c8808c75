"""Standard RDP Security (MS-RDPBCGR 5.3), sans-I/O: the proprietary server certificate, the client
random exchange, session key derivation, RC4 with periodic key updates, MAC signatures, headers."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4 as _ARC4
except ImportError:  # cryptography < 43 keeps ARC4 with the modern algorithms
    from cryptography.hazmat.primitives.ciphers.algorithms import ARC4 as _ARC4


class ProtocolError(ValueError):
    """Malformed or unauthentic bytes from the peer: close that connection, nothing else."""


# Basic security header flags (MS-RDPBCGR 2.2.8.1.1.2.1).
SEC_EXCHANGE_PKT = 0x0001
SEC_TRANSPORT_REQ = 0x0002
SEC_TRANSPORT_RSP = 0x0004
SEC_ENCRYPT = 0x0008
SEC_RESET_SEQNO = 0x0010
SEC_IGNORE_SEQNO = 0x0020
SEC_INFO_PKT = 0x0040
SEC_LICENSE_PKT = 0x0080
SEC_LICENSE_ENCRYPT = 0x0200
SEC_REDIRECTION_PKT = 0x0400
SEC_SECURE_CHECKSUM = 0x0800
SEC_AUTODETECT_REQ = 0x1000
SEC_AUTODETECT_RSP = 0x2000
SEC_HEARTBEAT = 0x4000
SEC_FLAGSHI_VALID = 0x8000

ENCRYPTION_METHOD_NONE = 0x00
ENCRYPTION_METHOD_40BIT = 0x01
ENCRYPTION_METHOD_128BIT = 0x02
ENCRYPTION_METHOD_56BIT = 0x08
ENCRYPTION_METHOD_FIPS = 0x10

ENCRYPTION_LEVEL_NONE = 0
ENCRYPTION_LEVEL_LOW = 1
ENCRYPTION_LEVEL_CLIENT_COMPATIBLE = 2
ENCRYPTION_LEVEL_HIGH = 3
ENCRYPTION_LEVEL_FIPS = 4

RANDOM_SIZE = 32
SIGNATURE_SIZE = 8
KEY_UPDATE_INTERVAL = 4096

# The Terminal Services signing key, published in MS-RDPBCGR 5.3.3.1.1 (little-endian there).
TS_MODULUS = int.from_bytes(bytes.fromhex(
    "3d3a5ebd72433ec94dbbc11e4aba5fcb3e882087eff5c1e2d7b76b9af2524595"
    "ce63656b583afeef7ce7bffe3df65c7d6c5e06091af561bb2093095f056dea87"), "little")
TS_PRIVATE_EXPONENT = int.from_bytes(bytes.fromhex(
    "87a71932da11875558001616256568f8243ee6fae9674994cf92cc3399e80860"
    "179a129f24ddb12499c73ab80a7b0ddd350779170b519bb3c7100113e73ff35f"), "little")
TS_PUBLIC_EXPONENT = int.from_bytes(bytes.fromhex("5b7b88c0"), "little")
TS_KEY_SIZE = 64

CERT_CHAIN_VERSION_1 = 1
SIGNATURE_ALG_RSA = 1
KEY_EXCHANGE_ALG_RSA = 1
BB_RSA_KEY_BLOB = 0x0006
BB_RSA_SIGNATURE_BLOB = 0x0008
RSA1_MAGIC = b"RSA1"

_PAD1 = b"\x36" * 40
_PAD2 = b"\x5c" * 48
_SALT_40 = b"\xd1\x26\x9e"
_SALT_56 = b"\xd1"


# --- RC4 -------------------------------------------------------------------------------------------

class PurePythonRc4:
    """RC4 in Python, for an OpenSSL built without the legacy RC4 cipher (a few MB/s)."""

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("RC4 key must not be empty")
        table = list(range(256))
        j = 0
        length = len(key)
        for i in range(256):
            j = (j + table[i] + key[i % length]) & 0xFF
            table[i], table[j] = table[j], table[i]
        self._table = table
        self._i = 0
        self._j = 0

    def update(self, data: bytes) -> bytes:
        table, i, j = self._table, self._i, self._j
        out = bytearray(data)
        for pos in range(len(out)):
            i = (i + 1) & 0xFF
            si = table[i]
            j = (j + si) & 0xFF
            sj = table[j]
            table[i] = sj
            table[j] = si
            out[pos] ^= table[(si + sj) & 0xFF]
        self._i, self._j = i, j
        return bytes(out)


def _openssl_rc4_available() -> bool:
    try:
        Cipher(_ARC4(b"\x00" * 16), mode=None).encryptor()
    except UnsupportedAlgorithm:
        return False
    return True


_OPENSSL_RC4 = _openssl_rc4_available()


class Rc4:
    """One RC4 key stream; OpenSSL's when it has RC4 (hundreds of MB/s, the screen updates need it)."""

    def __init__(self, key: bytes, *, pure_python: bool = False):
        # OpenSSL takes only some key lengths; RDP's 8- and 16-byte keys are among them.
        if pure_python or not _OPENSSL_RC4 or len(key) * 8 not in _ARC4.key_sizes:
            self._cipher = PurePythonRc4(key)
        else:
            self._cipher = Cipher(_ARC4(bytes(key)), mode=None).encryptor()

    def update(self, data: bytes) -> bytes:
        return self._cipher.update(data)


def rc4(key: bytes, data: bytes) -> bytes:
    return Rc4(key).update(data)


# --- key derivation (MS-RDPBCGR 5.3.5.1) ----------------------------------------------------------

def _salted_hash(secret: bytes, label: bytes, client_random: bytes, server_random: bytes) -> bytes:
    inner = hashlib.sha1(label + secret + client_random + server_random).digest()
    return hashlib.md5(secret + inner).digest()


def _hash_48(secret: bytes, labels: tuple[bytes, ...], client_random: bytes,
             server_random: bytes) -> bytes:
    return b"".join(_salted_hash(secret, label, client_random, server_random) for label in labels)


def _final_hash(key: bytes, client_random: bytes, server_random: bytes) -> bytes:
    return hashlib.md5(key + client_random + server_random).digest()


def key_length(method: int) -> int:
    """Bytes of RC4 and MAC key a method uses: 40- and 56-bit keys are 64-bit keys with a fixed salt."""
    if method in (ENCRYPTION_METHOD_40BIT, ENCRYPTION_METHOD_56BIT):
        return 8
    if method == ENCRYPTION_METHOD_128BIT:
        return 16
    raise ValueError(f"no RC4 key for encryption method {method:#x}")


def reduce_key(key: bytes, method: int) -> bytes:
    """The key actually used with a method: the first keyLen bytes, the weak ones salted (5.3.5.1)."""
    key = bytes(key[:key_length(method)])
    if method == ENCRYPTION_METHOD_40BIT:
        return _SALT_40 + key[3:]
    if method == ENCRYPTION_METHOD_56BIT:
        return _SALT_56 + key[1:]
    return key


@dataclass(frozen=True)
class SessionKeys:
    """Keys for one connection, already reduced to the method's length; server's point of view."""

    method: int
    mac_key: bytes
    encrypt_key: bytes  # server -> client (InitialClientDecryptKey128 on the client side)
    decrypt_key: bytes  # client -> server (InitialClientEncryptKey128 on the client side)


def derive_session_keys(client_random: bytes, server_random: bytes, method: int) -> SessionKeys:
    if len(client_random) != RANDOM_SIZE or len(server_random) != RANDOM_SIZE:
        raise ValueError("client and server randoms are 32 bytes")
    pre_master = client_random[:24] + server_random[:24]
    master = _hash_48(pre_master, (b"A", b"BB", b"CCC"), client_random, server_random)
    blob = _hash_48(master, (b"X", b"YY", b"ZZZ"), client_random, server_random)
    return SessionKeys(
        method=method,
        mac_key=reduce_key(blob[:16], method),
        encrypt_key=reduce_key(_final_hash(blob[16:32], client_random, server_random), method),
        decrypt_key=reduce_key(_final_hash(blob[32:48], client_random, server_random), method),
    )


def update_key(initial_key: bytes, current_key: bytes, method: int) -> bytes:
    """The next RC4 key after 4096 packets (MS-RDPBCGR 5.3.7): hashed, then RC4-encrypted by itself."""
    length = key_length(method)
    inner = hashlib.sha1(initial_key[:length] + _PAD1 + current_key[:length]).digest()
    temp = hashlib.md5(initial_key[:length] + _PAD2 + inner).digest()[:length]
    return reduce_key(Rc4(temp).update(temp), method)


# --- MAC (MS-RDPBCGR 5.3.6.1) ---------------------------------------------------------------------

def mac_signature(mac_key: bytes, data: bytes) -> bytes:
    inner = hashlib.sha1(mac_key + _PAD1 + struct.pack("<I", len(data)) + data).digest()
    return hashlib.md5(mac_key + _PAD2 + inner).digest()[:SIGNATURE_SIZE]


def salted_mac_signature(mac_key: bytes, data: bytes, encryption_count: int) -> bytes:
    """SEC_SECURE_CHECKSUM: the packet's sequence number in the direction keeps replays from verifying."""
    inner = hashlib.sha1(mac_key + _PAD1 + struct.pack("<I", len(data)) + data
                         + struct.pack("<I", encryption_count & 0xFFFFFFFF)).digest()
    return hashlib.md5(mac_key + _PAD2 + inner).digest()[:SIGNATURE_SIZE]


# --- per-direction RC4 state and the secure channel ----------------------------------------------

class _Direction:
    """One direction's RC4 stream: a single stream shared by slow-path, fast-path and channel PDUs."""

    def __init__(self, key: bytes, method: int, pure_python: bool):
        self._method = method
        self._initial = key
        self._current = key
        self._pure_python = pure_python
        self._rc4 = Rc4(key, pure_python=pure_python)
        self._since_update = 0
        # Never reset on key updates: the salted MAC numbers packets over the whole connection.
        self.count = 0

    def crypt(self, data: bytes) -> bytes:
        if self._since_update == KEY_UPDATE_INTERVAL:
            self._current = update_key(self._initial, self._current, self._method)
            self._rc4 = Rc4(self._current, pure_python=self._pure_python)
            self._since_update = 0
        out = self._rc4.update(data)
        self._since_update += 1
        self.count += 1
        return out


class SecureChannel:
    """RC4 + MAC for one connection after the Security Exchange; the server's side unless told."""

    def __init__(self, method: int, client_random: bytes, server_random: bytes, *,
                 server_side: bool = True, salted_mac: bool = False, pure_python_rc4: bool = False):
        keys = derive_session_keys(client_random, server_random, method)
        self.method = method
        self.keys = keys
        # Both General capability sets carrying ENC_SALTED_CHECKSUM turn this on after activation.
        self.salted_mac = salted_mac
        out_key, in_key = ((keys.encrypt_key, keys.decrypt_key) if server_side
                           else (keys.decrypt_key, keys.encrypt_key))
        self._out = _Direction(out_key, method, pure_python_rc4)
        self._in = _Direction(in_key, method, pure_python_rc4)

    def _sign(self, data: bytes, salted: bool, count: int) -> bytes:
        if salted:
            return salted_mac_signature(self.keys.mac_key, data, count)
        return mac_signature(self.keys.mac_key, data)

    def seal(self, payload: bytes, salted: bool | None = None) -> tuple[bytes, bytes]:
        """(dataSignature, ciphertext) for fast-path and slow-path alike; the MAC covers the plaintext."""
        salted = self.salted_mac if salted is None else salted
        mac = self._sign(payload, salted, self._out.count)
        return mac, self._out.crypt(payload)

    def open(self, mac: bytes, ciphertext: bytes, salted: bool) -> bytes:
        if len(mac) != SIGNATURE_SIZE:
            raise ProtocolError("data signature is not 8 bytes")
        count = self._in.count
        plaintext = self._in.crypt(ciphertext)
        if not _constant_time_equal(mac, self._sign(plaintext, salted, count)):
            raise ProtocolError("MAC signature mismatch")
        return plaintext

    def wrap(self, payload: bytes) -> tuple[int, bytes, bytes]:
        """Slow-path: (security header flags, dataSignature, ciphertext)."""
        flags = SEC_ENCRYPT | (SEC_SECURE_CHECKSUM if self.salted_mac else 0)
        mac, encrypted = self.seal(payload, self.salted_mac)
        return flags, mac, encrypted

    def unwrap(self, flags: int, data: bytes) -> bytes:
        """Slow-path: data is what follows the basic header (signature + ciphertext)."""
        if not flags & SEC_ENCRYPT:
            raise ProtocolError("PDU is not encrypted")
        if len(data) < SIGNATURE_SIZE:
            raise ProtocolError("encrypted PDU shorter than its signature")
        return self.open(bytes(data[:SIGNATURE_SIZE]), bytes(data[SIGNATURE_SIZE:]),
                         bool(flags & SEC_SECURE_CHECKSUM))

    def encrypt_pdu(self, payload: bytes, extra_flags: int = 0) -> bytes:
        """A whole slow-path security header + signature + ciphertext, ready for the MCS layer."""
        flags, mac, encrypted = self.wrap(payload)
        return build_security_header(flags | extra_flags, mac) + encrypted


def _constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --- security headers (MS-RDPBCGR 2.2.8.1.1.2) ----------------------------------------------------

@dataclass(frozen=True)
class SecurityHeader:
    flags: int
    flags_hi: int
    signature: bytes | None  # present when SEC_ENCRYPT is set (TS_SECURITY_HEADER1)
    body: bytes


def build_security_header(flags: int, signature: bytes | None = None, flags_hi: int = 0) -> bytes:
    header = struct.pack("<HH", flags & 0xFFFF, flags_hi & 0xFFFF)
    if signature is None:
        return header
    if len(signature) != SIGNATURE_SIZE:
        raise ValueError("data signature is 8 bytes")
    return header + signature


def parse_security_header(data: bytes, *, encrypted_session: bool = True) -> SecurityHeader:
    """Splits a slow-path PDU; a signature follows only when the session uses RC4 and SEC_ENCRYPT is set."""
    if len(data) < 4:
        raise ProtocolError("security header truncated")
    flags, flags_hi = struct.unpack_from("<HH", data)
    if flags & SEC_ENCRYPT and encrypted_session:
        if len(data) < 4 + SIGNATURE_SIZE:
            raise ProtocolError("security header signature truncated")
        return SecurityHeader(flags, flags_hi, bytes(data[4:12]), bytes(data[12:]))
    return SecurityHeader(flags, flags_hi, None, bytes(data[4:]))


# --- server key, proprietary certificate, client random -------------------------------------------

def _public_key_blob(modulus: int, exponent: int, size: int) -> bytes:
    return (RSA1_MAGIC + struct.pack("<IIII", size + 8, size * 8, size - 1, exponent)
            + modulus.to_bytes(size, "little") + b"\x00" * 8)


def _ts_signature_block(signed: bytes) -> int:
    # MS-RDPBCGR 5.3.3.1.2: MD5, 0x00, 45 x 0xFF, 0x01, and a zero top byte so the value stays < n.
    block = hashlib.md5(signed).digest() + b"\x00" + b"\xff" * 45 + b"\x01" + b"\x00"
    return int.from_bytes(block, "little")


def proprietary_certificate(modulus: int, exponent: int, size: int) -> bytes:
    """A PROPRIETARYSERVERCERTIFICATE signed with the Terminal Services key (MS-RDPBCGR 2.2.1.4.3.1.1)."""
    if not 0 < exponent <= 0xFFFFFFFF:
        raise ValueError("the RSA1 blob holds a 32-bit public exponent")
    key_blob = _public_key_blob(modulus, exponent, size)
    signed = struct.pack("<IIIHH", CERT_CHAIN_VERSION_1, SIGNATURE_ALG_RSA, KEY_EXCHANGE_ALG_RSA,
                         BB_RSA_KEY_BLOB, len(key_blob)) + key_blob
    signature = pow(_ts_signature_block(signed), TS_PRIVATE_EXPONENT, TS_MODULUS)
    return (signed + struct.pack("<HH", BB_RSA_SIGNATURE_BLOB, TS_KEY_SIZE + 8)
            + signature.to_bytes(TS_KEY_SIZE, "little") + b"\x00" * 8)


@dataclass(frozen=True)
class ProprietaryCertificate:
    exponent: int
    modulus: int
    size: int
    signed_bytes: bytes
    signature: bytes

    def signature_valid(self) -> bool:
        """What mstsc checks: the TS public key opens the signature to the padded MD5 of the body."""
        sig = int.from_bytes(self.signature[:TS_KEY_SIZE], "little")
        if sig >= TS_MODULUS:
            return False
        return pow(sig, TS_PUBLIC_EXPONENT, TS_MODULUS) == _ts_signature_block(self.signed_bytes)


def parse_proprietary_certificate(data: bytes) -> ProprietaryCertificate:
    try:
        version, sig_alg, key_alg, blob_type, blob_len = struct.unpack_from("<IIIHH", data)
        if version & 0x7FFFFFFF != CERT_CHAIN_VERSION_1:
            raise ProtocolError("not a proprietary certificate")
        if (sig_alg, key_alg, blob_type) != (SIGNATURE_ALG_RSA, KEY_EXCHANGE_ALG_RSA, BB_RSA_KEY_BLOB):
            raise ProtocolError("unexpected certificate algorithms")
        blob = data[16:16 + blob_len]
        if len(blob) != blob_len or blob_len < 20 or blob[:4] != RSA1_MAGIC:
            raise ProtocolError("bad RSA1 public key blob")
        keylen, bitlen, datalen, exponent = struct.unpack_from("<IIII", blob, 4)
        size = keylen - 8
        if size <= 0 or bitlen != size * 8 or datalen != size - 1 or blob_len < 20 + keylen:
            raise ProtocolError("inconsistent RSA1 key lengths")
        modulus = int.from_bytes(blob[20:20 + size], "little")
        offset = 16 + blob_len
        sig_type, sig_len = struct.unpack_from("<HH", data, offset)
        signature = data[offset + 4:offset + 4 + sig_len]
        if sig_type != BB_RSA_SIGNATURE_BLOB or len(signature) != sig_len or sig_len < TS_KEY_SIZE:
            raise ProtocolError("bad certificate signature blob")
    except struct.error as exc:
        raise ProtocolError("certificate truncated") from exc
    return ProprietaryCertificate(exponent, modulus, size, bytes(data[:offset]), bytes(signature))


class ServerKey:
    """The RSA key pair behind the proprietary certificate; made fresh per server start, never stored.

    Clients cannot pin it (the only check is the public TS signature), so a new key costs nothing and
    leaves no secret at rest. 2048 bits by default: rdesktop and FreeRDP take 512..2048-bit moduli, and
    the classic 512-bit key would let a passive listener factor it and read recorded sessions."""

    def __init__(self, private_key: rsa.RSAPrivateKey):
        numbers = private_key.private_numbers()
        public = numbers.public_numbers
        if public.e > 0xFFFFFFFF:
            raise ValueError("the RSA1 blob holds a 32-bit public exponent")
        self._numbers = numbers
        self.modulus = public.n
        self.exponent = public.e
        self.size = (public.n.bit_length() + 7) // 8
        self.certificate = proprietary_certificate(self.modulus, self.exponent, self.size)

    @classmethod
    def generate(cls, bits: int = 2048) -> ServerKey:
        # cryptography refuses to make keys under 1024 bits; rdesktop refuses moduli over 2048.
        if not 1024 <= bits <= 2048 or bits % 64:
            raise ValueError("proprietary certificate keys are 1024..2048 bits")
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    def raw_decrypt(self, value: int) -> int:
        # Chinese remainder theorem: one connection's client random costs ~4x less than pow(c, d, n).
        n = self._numbers
        m1 = pow(value, n.dmp1, n.p)
        m2 = pow(value, n.dmq1, n.q)
        return m2 + (n.iqmp * (m1 - m2) % n.p) * n.q

    def decrypt_client_random(self, encrypted: bytes) -> bytes:
        """Raw little-endian RSA as RDP does it (no padding); the random is the value's low 32 bytes."""
        if len(encrypted) < self.size:
            raise ProtocolError("encrypted client random shorter than the modulus")
        value = int.from_bytes(encrypted[:self.size], "little")
        if value >= self.modulus:
            raise ProtocolError("encrypted client random out of range")
        return self.raw_decrypt(value).to_bytes(self.size, "little")[:RANDOM_SIZE]


def encrypt_client_random(client_random: bytes, modulus: int, exponent: int, size: int) -> bytes:
    """What a client sends in the Security Exchange PDU body (used by test clients)."""
    value = pow(int.from_bytes(client_random, "little"), exponent, modulus)
    return value.to_bytes(size, "little") + b"\x00" * 8


def parse_security_exchange(data: bytes, key_size: int) -> bytes:
    """TS_SECURITY_PACKET after the basic header: length u32 + encrypted random (+ 8 zero bytes)."""
    if len(data) < 4:
        raise ProtocolError("security exchange truncated")
    (length,) = struct.unpack_from("<I", data)
    # Clients send modulus + 8 bytes of padding; the padding is tolerated missing, nothing else.
    if length not in (key_size, key_size + 8) or len(data) < 4 + length:
        raise ProtocolError(f"security exchange length {length} for a {key_size}-byte key")
    return bytes(data[4:4 + key_size])


def select_encryption_method(methods: int, ext_methods: int = 0) -> int:
    """Strongest RC4 method the client offers (CS_SECURITY; French clients use extEncryptionMethods)."""
    offered = methods | ext_methods
    for method in (ENCRYPTION_METHOD_128BIT, ENCRYPTION_METHOD_56BIT, ENCRYPTION_METHOD_40BIT):
        if offered & method:
            return method
    return ENCRYPTION_METHOD_NONE


class StandardSecurity:
    """The server half of one connection's Standard RDP Security: what SC_SECURITY carries, then keys."""

    def __init__(self, key: ServerKey, method: int, server_random: bytes | None = None):
        key_length(method)  # rejects NONE and FIPS here, not later at the Security Exchange
        self.key = key
        self.method = method
        self.server_random = os.urandom(RANDOM_SIZE) if server_random is None else bytes(server_random)
        if len(self.server_random) != RANDOM_SIZE:
            raise ValueError("the server random is 32 bytes")

    @property
    def certificate(self) -> bytes:
        return self.key.certificate

    def accept_security_exchange(self, pdu: bytes) -> SecureChannel:
        """pdu: the MCS Send Data payload, from the basic security header on."""
        header = parse_security_header(pdu, encrypted_session=False)
        if not header.flags & SEC_EXCHANGE_PKT:
            raise ProtocolError("expected a Security Exchange PDU")
        encrypted = parse_security_exchange(header.body, self.key.size)
        client_random = self.key.decrypt_client_random(encrypted)
        return SecureChannel(self.method, client_random, self.server_random)
