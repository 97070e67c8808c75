"""Little-endian cursor over peer bytes for the PDU codecs: every read past the end, or of a field that
cannot hold what the peer claims, raises ProtocolError instead of IndexError or struct.error."""

from __future__ import annotations

import struct

from services.vrdp.tpkt import ProtocolError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I16 = struct.Struct("<h")
_I32 = struct.Struct("<i")


class Reader:
    def __init__(self, data: bytes, what: str = "PDU") -> None:
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def need(self, size: int) -> None:
        if size < 0 or self.pos + size > len(self.data):
            raise ProtocolError(f"{self.what} truncated: need {size} bytes at offset {self.pos}, "
                                f"have {self.remaining}")

    def u8(self) -> int:
        self.need(1)
        self.pos += 1
        return self.data[self.pos - 1]

    def _unpack(self, fmt: struct.Struct) -> int:
        self.need(fmt.size)
        value = fmt.unpack_from(self.data, self.pos)[0]
        self.pos += fmt.size
        return value

    def u16(self) -> int:
        return self._unpack(_U16)

    def u32(self) -> int:
        return self._unpack(_U32)

    def i16(self) -> int:
        return self._unpack(_I16)

    def i32(self) -> int:
        return self._unpack(_I32)

    def take(self, size: int) -> bytes:
        self.need(size)
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def skip(self, size: int) -> None:
        self.need(size)
        self.pos += size

    def rest(self) -> bytes:
        data = self.data[self.pos:]
        self.pos = len(self.data)
        return data


def utf16z(text: str) -> bytes:
    """UTF-16LE with its 2-byte terminator, the form of every Unicode string field in these PDUs."""
    return text.encode("utf-16-le") + b"\0\0"


def decode_utf16(data: bytes) -> str:
    """Text up to the first NUL; peers pad fixed-size fields with zeros and garbage after them."""
    if len(data) % 2:
        data = data[:-1]
    text = data.decode("utf-16-le", errors="replace")
    return text.split("\0", 1)[0]
