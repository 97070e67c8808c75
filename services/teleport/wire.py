"""The teleporter's byte protocol, sans I/O: VirtualBox's handshake of text lines (welcome, password,
ACK/NACK, commands) and its framed binary stream (research/vrde.md §6.3), with our own welcome line."""

from __future__ import annotations

import hashlib
import struct

WELCOME = b"Headbox-Teleporter-1.0\n"
BLOCK_MAGIC = 0x19471205
BLOCK_MAX = 0x00FFFFF8            # data bytes per block
BLOCK_CANCEL = 0xFFFFFFFF
_HEADER = struct.Struct("<II")
MAX_LINE = 1024

# IPRT status codes VirtualBox puts in NACK lines.
VERR_NOT_IMPLEMENTED = -12
VERR_WRONG_ORDER = -22
VERR_AUTHENTICATION_FAILURE = -89
VERR_FILE_LOCK_FAILED = -115
VERR_SSM_LOAD_CONFIG_MISMATCH = -1844
VERR_SSM_CANCELLED = -1858


class WireError(Exception):
    """The peer broke the protocol, refused a step (NACK) or went away; the message is for the user."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def hash_password(password: str) -> str:
    """VirtualBox's stored and transmitted form: "#SHA-512#" + salt (empty) + "#" + hex digest;
    an empty password stays empty (no password)."""
    if not password:
        return ""
    return "#SHA-512##" + hashlib.sha512(password.encode()).hexdigest()


def is_hashed(password: str) -> bool:
    return password.startswith("#SHA-512#") and password.count("#") == 3


def ack() -> bytes:
    return b"ACK\n"


def nack(code: int, message: str = "") -> bytes:
    text = message.replace("\n", "\r")[:400]
    return f"NACK={code};{text}\n".encode() if text else f"NACK={code}\n".encode()


def parse_reply(line: bytes, what: str) -> None:
    """An ACK returns; a NACK raises WireError with the peer's message (or a composed one)."""
    text = line.decode("utf-8", "replace").rstrip("\n")
    if text == "ACK":
        return
    if text.startswith("NACK="):
        code_text, _, message = text[5:].partition(";")
        try:
            code = int(code_text)
        except ValueError:
            raise WireError(f"{what}: Expected ACK or NACK, got '{text}'") from None
        message = message.replace("\r", "\n")
        raise WireError(message if len(message) > 4 else f"NACK({what}) - {code}", code)
    raise WireError(f"{what}: Expected ACK or NACK, got '{text[:80]}'")


def frame(data: bytes) -> bytes:
    """One block of the stream (data may be empty only as end of stream)."""
    if len(data) > BLOCK_MAX:
        raise ValueError(f"block of {len(data)} bytes exceeds {BLOCK_MAX}")
    return _HEADER.pack(BLOCK_MAGIC, len(data)) + data


END_OF_STREAM = _HEADER.pack(BLOCK_MAGIC, 0)
CANCEL = _HEADER.pack(BLOCK_MAGIC, BLOCK_CANCEL)


class Reader:
    """Bytes in, lines and blocks out. The caller feeds what the socket gave and asks for the next
    line or block; None means "need more bytes"."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def line(self) -> bytes | None:
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > MAX_LINE:
                raise WireError("the peer sent a line longer than the protocol allows")
            return None
        if end >= MAX_LINE:
            raise WireError("the peer sent a line longer than the protocol allows")
        line = bytes(self._buf[:end + 1])
        del self._buf[:end + 1]
        return line

    def exact(self, n: int) -> bytes | None:
        if len(self._buf) < n:
            return None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def block(self) -> bytes | None:
        """The next block's data; b"" at end of stream. Raises WireError on a bad header or cancel."""
        if len(self._buf) < _HEADER.size:
            return None
        magic, size = _HEADER.unpack_from(self._buf)
        if magic != BLOCK_MAGIC:
            raise WireError(f"bad stream block header (magic {magic:#x})")
        if size == BLOCK_CANCEL:
            raise WireError("the source cancelled the teleport", VERR_SSM_CANCELLED)
        if size > BLOCK_MAX:
            raise WireError(f"stream block of {size} bytes exceeds the protocol's {BLOCK_MAX}")
        if len(self._buf) < _HEADER.size + size:
            return None
        data = bytes(self._buf[_HEADER.size:_HEADER.size + size])
        del self._buf[:_HEADER.size + size]
        return data
