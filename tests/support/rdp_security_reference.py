"""A second implementation of Standard RDP Security, written straight from the formulas of
MS-RDPBCGR 5.3, to check services/vrdp/security.py against."""

import hashlib
import struct

from services.vrdp import security as sec


def ref_rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = []
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def ref_keys(client_random, server_random, method):
    """MS-RDPBCGR 5.3.5.1 spelled out name by name (server's view)."""
    def salted_hash(s, i):
        return hashlib.md5(s + hashlib.sha1(i + s + client_random + server_random).digest()).digest()

    pre_master_secret = client_random[0:24] + server_random[0:24]
    master_secret = (salted_hash(pre_master_secret, b"\x41") + salted_hash(pre_master_secret, b"\x42\x42")
                     + salted_hash(pre_master_secret, b"\x43\x43\x43"))
    session_key_blob = (salted_hash(master_secret, b"\x58") + salted_hash(master_secret, b"\x59\x59")
                        + salted_hash(master_secret, b"\x5a\x5a\x5a"))

    def final_hash(k):
        return hashlib.md5(k + client_random + server_random).digest()

    mac_key_128 = session_key_blob[0:16]
    initial_server_encrypt_key_128 = final_hash(session_key_blob[16:32])
    initial_server_decrypt_key_128 = final_hash(session_key_blob[32:48])
    if method == sec.ENCRYPTION_METHOD_128BIT:
        return mac_key_128, initial_server_encrypt_key_128, initial_server_decrypt_key_128
    if method == sec.ENCRYPTION_METHOD_56BIT:
        return tuple(bytes([0xD1]) + k[1:8] for k in
                     (mac_key_128, initial_server_encrypt_key_128, initial_server_decrypt_key_128))
    return tuple(bytes([0xD1, 0x26, 0x9E]) + k[3:8] for k in
                 (mac_key_128, initial_server_encrypt_key_128, initial_server_decrypt_key_128))


def ref_mac(key, data, count=None):
    tail = b"" if count is None else struct.pack("<I", count)
    sha = hashlib.sha1(key + b"\x36" * 40 + struct.pack("<I", len(data)) + data + tail).digest()
    return hashlib.md5(key + b"\x5c" * 48 + sha).digest()[:8]


def ref_update(initial, current, method):
    n = len(initial)
    sha = hashlib.sha1(initial + b"\x36" * 40 + current).digest()
    temp = hashlib.md5(initial + b"\x5c" * 48 + sha).digest()[:n]
    new = ref_rc4(temp, temp)
    if method == sec.ENCRYPTION_METHOD_40BIT:
        new = b"\xd1\x26\x9e" + new[3:]
    elif method == sec.ENCRYPTION_METHOD_56BIT:
        new = b"\xd1" + new[1:]
    return new
