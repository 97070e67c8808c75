"""Server graphics output (MS-RDPBCGR 2.2.9): bitmap, palette, synchronize and pointer updates as
fast-path updates with fragmentation, and the slow-path Update/Pointer PDUs for other clients."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.vrdp.pdu import share
from services.vrdp.pdu.share import DEFAULT_SHARE_ID, build_share_data
from services.vrdp.pdu.wire import Reader
from services.vrdp.tpkt import FASTPATH_MAX_LENGTH, ProtocolError, build_fastpath

UPDATETYPE_ORDERS = 0x0000
UPDATETYPE_BITMAP = 0x0001
UPDATETYPE_PALETTE = 0x0002
UPDATETYPE_SYNCHRONIZE = 0x0003

FASTPATH_UPDATETYPE_ORDERS = 0x0
FASTPATH_UPDATETYPE_BITMAP = 0x1
FASTPATH_UPDATETYPE_PALETTE = 0x2
FASTPATH_UPDATETYPE_SYNCHRONIZE = 0x3
FASTPATH_UPDATETYPE_SURFCMDS = 0x4
FASTPATH_UPDATETYPE_PTR_NULL = 0x5
FASTPATH_UPDATETYPE_PTR_DEFAULT = 0x6
FASTPATH_UPDATETYPE_PTR_POSITION = 0x8
FASTPATH_UPDATETYPE_COLOR = 0x9
FASTPATH_UPDATETYPE_CACHED = 0xA
FASTPATH_UPDATETYPE_POINTER = 0xB
FASTPATH_UPDATETYPE_LARGE_POINTER = 0xC

FASTPATH_FRAGMENT_SINGLE = 0x0
FASTPATH_FRAGMENT_LAST = 0x1
FASTPATH_FRAGMENT_FIRST = 0x2
FASTPATH_FRAGMENT_NEXT = 0x3

BITMAP_COMPRESSION = 0x0001
NO_BITMAP_COMPRESSION_HDR = 0x0400

# Slow-path pointer messageType (2.2.9.1.1.4).
TS_PTRMSGTYPE_SYSTEM = 0x0001
TS_PTRMSGTYPE_POSITION = 0x0003
TS_PTRMSGTYPE_COLOR = 0x0006
TS_PTRMSGTYPE_CACHED = 0x0007
TS_PTRMSGTYPE_POINTER = 0x0008
TS_PTRMSGTYPE_LARGE = 0x0009
SYSPTR_NULL = 0x00000000
SYSPTR_DEFAULT = 0x00007F00

# FreeRDP's server keeps every fast-path PDU within 0x3FFF bytes; clients' receive paths are tuned to it.
FASTPATH_MAX_PDU = 0x3FFF
FASTPATH_PDU_HEADER = 3          # fpOutputHeader + 2-byte length
FASTPATH_SIGNATURE = 8           # present when the session encrypts
FASTPATH_UPDATE_HEADER = 3       # updateHeader + size (no compressionFlags: we never compress)


@dataclass(frozen=True)
class BitmapRect:
    """TS_BITMAP_DATA. dest_* are inclusive; width/height describe `data`, which may be wider than
    the destination (clients clip with dest_right). Uncompressed data is bottom-up and flags 0."""
    dest_left: int
    dest_top: int
    dest_right: int
    dest_bottom: int
    width: int
    height: int
    bpp: int
    flags: int
    data: bytes

    def to_bytes(self) -> bytes:
        return struct.pack("<9H", self.dest_left, self.dest_top, self.dest_right, self.dest_bottom, self.width,
                           self.height, self.bpp, self.flags, len(self.data)) + self.data


def bitmap_update_data(rects: list[BitmapRect]) -> bytes:
    """TS_UPDATE_BITMAP_DATA: the same bytes in the slow-path Update PDU and the fast-path update."""
    return struct.pack("<HH", UPDATETYPE_BITMAP, len(rects)) + b"".join(r.to_bytes() for r in rects)


def parse_bitmap_update_data(data: bytes) -> list[BitmapRect]:
    """Inverse of bitmap_update_data, for tests and the recording tools."""
    reader = Reader(data, "bitmap update")
    if reader.u16() != UPDATETYPE_BITMAP:
        raise ProtocolError("not a bitmap update")
    rects = []
    for _ in range(reader.u16()):
        fields = [reader.u16() for _ in range(9)]
        rects.append(BitmapRect(*fields[:8], reader.take(fields[8])))
    return rects


# --- pointer shapes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PointerShape:
    """TS_COLORPOINTERATTRIBUTE / TS_POINTERATTRIBUTE content: masks bottom-up, rows padded to 2 bytes."""
    cache_index: int
    hot_x: int
    hot_y: int
    width: int
    height: int
    xor_bpp: int
    xor_mask: bytes
    and_mask: bytes


def _row_stride(width: int, bpp: int) -> int:
    stride = (width * bpp + 7) // 8
    return stride + (stride & 1)


def pointer_from_bgra(bgra: bytes, width: int, height: int, hot_x: int, hot_y: int,
                      cache_index: int = 0) -> PointerShape:
    """A 32 bpp pointer from top-down B,G,R,A pixels. Fully transparent pixels also get AND=1 over a
    black XOR pixel, so a client that ignores alpha still shows them transparent."""
    if len(bgra) != width * height * 4:
        raise ValueError("pointer pixels do not match width x height x 4")
    if not (0 < width <= 384 and 0 < height <= 384):
        raise ValueError("pointer sizes are 1..384")
    and_stride = _row_stride(width, 1)
    xor_rows, and_rows = [], []
    for y in range(height - 1, -1, -1):
        row = bytearray(bgra[y * width * 4:(y + 1) * width * 4])
        mask = bytearray(and_stride)
        for x in range(width):
            if row[x * 4 + 3] == 0:
                row[x * 4:x * 4 + 4] = b"\0\0\0\0"
                mask[x >> 3] |= 0x80 >> (x & 7)
        xor_rows.append(bytes(row))
        and_rows.append(bytes(mask))
    return PointerShape(cache_index, min(hot_x, width - 1), min(hot_y, height - 1), width, height, 32,
                        b"".join(xor_rows), b"".join(and_rows))


def color_pointer_data(shape: PointerShape) -> bytes:
    """TS_COLORPOINTERATTRIBUTE (24 bpp by definition; the caller supplies a 24 bpp XOR mask)."""
    return struct.pack("<7H", shape.cache_index, shape.hot_x, shape.hot_y, shape.width, shape.height,
                       len(shape.and_mask), len(shape.xor_mask)) + shape.xor_mask + shape.and_mask


def new_pointer_data(shape: PointerShape) -> bytes:
    """TS_POINTERATTRIBUTE: xorBpp + colour pointer attribute; rdesktop handles it up to 96x96."""
    if shape.width > 96 or shape.height > 96:
        raise ValueError("pointers above 96x96 need the large pointer update")
    return struct.pack("<H", shape.xor_bpp) + color_pointer_data(shape)


def large_pointer_data(shape: PointerShape) -> bytes:
    """TS_LARGEPOINTERATTRIBUTE: only for clients with the LargePointer capability (not rdesktop)."""
    return struct.pack("<6HII", shape.xor_bpp, shape.cache_index, shape.hot_x, shape.hot_y, shape.width,
                       shape.height, len(shape.and_mask), len(shape.xor_mask)) + shape.xor_mask + shape.and_mask


def cached_pointer_data(cache_index: int) -> bytes:
    return struct.pack("<H", cache_index)


def pointer_position_data(x: int, y: int) -> bytes:
    return struct.pack("<HH", x, y)


# --- fast path -------------------------------------------------------------------------------------

def fastpath_update(code: int, data: bytes, fragmentation: int = FASTPATH_FRAGMENT_SINGLE) -> bytes:
    """One TS_FP_UPDATE without compression."""
    if len(data) > 0xFFFF:
        raise ValueError("fast-path update data has a 16-bit size")
    return bytes((code | fragmentation << 4,)) + struct.pack("<H", len(data)) + data


def fastpath_update_bodies(code: int, data: bytes, multifragment_max: int | None,
                           encrypted: bool = False, max_pdu: int = FASTPATH_MAX_PDU) -> list[bytes]:
    """The fast-path PDU bodies (TS_FP_UPDATE each) that carry one update, fragmented when it does not
    fit one PDU. Fragments are one per PDU because aardwolf reads exactly one update per PDU.

    `multifragment_max` is the client's MultifragMaxRequestSize: None (capability absent) forbids
    fragmentation; the reassembled size must not exceed it (FreeRDP drops the connection)."""
    budget = max_pdu - FASTPATH_PDU_HEADER - FASTPATH_UPDATE_HEADER - (FASTPATH_SIGNATURE if encrypted else 0)
    if len(data) <= budget:
        return [fastpath_update(code, data)]
    if multifragment_max is None or len(data) > multifragment_max:
        raise ValueError(f"update of {len(data)} bytes exceeds what the client reassembles "
                         f"({multifragment_max}); send smaller rectangles")
    chunks = [data[i:i + budget] for i in range(0, len(data), budget)]
    bodies = []
    for index, chunk in enumerate(chunks):
        if index == 0:
            fragmentation = FASTPATH_FRAGMENT_FIRST
        elif index == len(chunks) - 1:
            fragmentation = FASTPATH_FRAGMENT_LAST
        else:
            fragmentation = FASTPATH_FRAGMENT_NEXT
        bodies.append(fastpath_update(code, chunk, fragmentation))
    return bodies


def build_fastpath_updates(code: int, data: bytes, multifragment_max: int | None,
                           max_pdu: int = FASTPATH_MAX_PDU) -> list[bytes]:
    """Whole unencrypted fast-path output frames (TLS sessions) for one update."""
    if max_pdu > FASTPATH_MAX_LENGTH:
        raise ValueError("fast-path PDUs are at most 0x7FFF bytes")
    return [build_fastpath(body) for body in fastpath_update_bodies(code, data, multifragment_max,
                                                                      max_pdu=max_pdu)]


@dataclass(frozen=True)
class FastPathUpdate:
    code: int
    fragmentation: int
    data: bytes


def parse_fastpath_updates(body: bytes) -> list[FastPathUpdate]:
    """The TS_FP_UPDATEs of one fast-path output body, for tests and the recording tools."""
    reader = Reader(body, "fast-path update")
    updates = []
    while reader.remaining:
        header = reader.u8()
        if header >> 6 & 0x2:
            reader.skip(1)  # compressionFlags
        updates.append(FastPathUpdate(header & 0xF, header >> 4 & 0x3, reader.take(reader.u16())))
    return updates


# --- slow path -------------------------------------------------------------------------------------

def build_update_pdu(update_data: bytes, share_id: int = DEFAULT_SHARE_ID, pdu_source: int = 0x03EA) -> bytes:
    """Slow-path Update PDU around TS_UPDATE_BITMAP_DATA / palette data (for clients without fast-path
    output); the caller keeps it within one TPKT (64 KiB) by sending fewer rectangles."""
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_UPDATE, update_data)


def build_update_synchronize(share_id: int = DEFAULT_SHARE_ID, pdu_source: int = 0x03EA) -> bytes:
    return build_update_pdu(struct.pack("<HH", UPDATETYPE_SYNCHRONIZE, 0), share_id, pdu_source)


def build_pointer_pdu(message_type: int, data: bytes, share_id: int = DEFAULT_SHARE_ID,
                      pdu_source: int = 0x03EA) -> bytes:
    return build_share_data(share_id, pdu_source, share.PDUTYPE2_POINTER,
                            struct.pack("<HH", message_type, 0) + data)


def build_system_pointer_pdu(hidden: bool, share_id: int = DEFAULT_SHARE_ID, pdu_source: int = 0x03EA) -> bytes:
    return build_pointer_pdu(TS_PTRMSGTYPE_SYSTEM, struct.pack("<I", SYSPTR_NULL if hidden else SYSPTR_DEFAULT),
                             share_id, pdu_source)
