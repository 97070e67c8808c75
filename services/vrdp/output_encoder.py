"""The graphics output of one activated RDP connection as sans-I/O code: frame rectangles in, bitmap and
palette updates out (64x64 tiles; planar, RLE or raw; fast-path or slow-path within the client's limits)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from services.vrdp import mcs, security
from services.vrdp.codecs import convert, planar, rle
from services.vrdp.pdu import capabilities, output, share

# 64x64 at most: the size every client's codec context takes (FreeRDP's planar decoder refuses a
# larger bitmap since 2.11.7).
TILE = 64
# Send Data Indication payloads stay within PER's 2-byte length form (FreeRDP decodes up to 0x7FFF).
SLOW_PATH_MAX_PAYLOAD = mcs.PER_MAX_LENGTH
# Standard RDP Security puts TS_SECURITY_HEADER1 (flags, flagsHi, an 8-byte MAC) in that payload.
SLOW_PATH_SECURITY_HEADER = 4 + security.SIGNATURE_SIZE
# The largest bitmap update we assemble even when a client reassembles more: rdesktop stops at 65535.
MAX_UPDATE_SIZE = 0xFFFF
BITMAP_UPDATE_HEADER = 4   # TS_UPDATE_BITMAP_DATA: updateType, numberRectangles
BITMAP_RECT_HEADER = 18    # TS_BITMAP_DATA before bitmapDataStream


@dataclass(frozen=True)
class FastPathOutput:
    """One fast-path output PDU body (TS_FP_UPDATE): the connection seals it when the session encrypts
    and puts the fast-path header in front."""
    body: bytes


@dataclass(frozen=True)
class SlowPathOutput:
    """One Update PDU (a Share Data PDU): the connection sends it on the I/O channel, sealed when the
    session encrypts."""
    share_data: bytes


OutputPdu = FastPathOutput | SlowPathOutput


class OutputEncoder:
    """The updates of one activation. Its desktop size, depth and client capabilities hold until the
    next activation, which makes a new encoder. The PDUs come lazily, in the order they must be sent."""

    def __init__(self, width: int, height: int, bpp: int, caps: capabilities.ClientCapabilities,
                 share_id: int, encrypted: bool):
        self.width = width
        self.height = height
        self.bpp = bpp
        self.share_id = share_id
        self.fastpath = caps.fastpath_output
        # The client's MultifragMaxRequestSize; None forbids fragmented fast-path updates.
        self.multifragment_max = caps.multifragment_max or None
        self.compression_header = not caps.no_bitmap_compression_header
        # Standard RDP Security: each PDU carries an 8-byte signature (slow-path: in a security header).
        self.encrypted = encrypted
        self.update_budget = self._largest_update()

    def _largest_update(self) -> int:
        """How many bytes of update data (TS_UPDATE_BITMAP_DATA) one update may carry."""
        if self.fastpath:
            single = (output.FASTPATH_MAX_PDU - output.FASTPATH_PDU_HEADER - output.FASTPATH_UPDATE_HEADER
                      - (output.FASTPATH_SIGNATURE if self.encrypted else 0))
            if self.multifragment_max:
                return max(single, min(self.multifragment_max, MAX_UPDATE_SIZE))
            return single
        return (SLOW_PATH_MAX_PAYLOAD - share.SHARE_DATA_HEADER_SIZE
                - (SLOW_PATH_SECURITY_HEADER if self.encrypted else 0))

    def palette_update(self) -> Iterator[OutputPdu]:
        """The palette of an 8 bpp session; the client must have it before the first bitmap."""
        return self._update(convert.palette_update_data(), output.FASTPATH_UPDATETYPE_PALETTE)

    def bitmap_updates(self, frame: np.ndarray, rects: Iterable[tuple[int, int, int, int]]) -> Iterator[OutputPdu]:
        """The (x, y, width, height) areas of a (h, w, 4) B,G,R,X frame, clipped to the desktop, in
        64x64 tiles."""
        height = min(self.height, frame.shape[0])
        width = min(self.width, frame.shape[1])
        tiles: list[output.BitmapRect] = []
        for x, y, w, h in rects:
            x0, y0 = max(0, x), max(0, y)
            x1, y1 = min(width, x + w), min(height, y + h)
            for ty in range(y0, y1, TILE):
                for tx in range(x0, x1, TILE):
                    tiles.extend(self._encode_tile(frame, tx, ty, min(TILE, x1 - tx), min(TILE, y1 - ty)))
        yield from self._batched_bitmap_updates(tiles)

    def _encode_tile(self, frame: np.ndarray, x: int, y: int, w: int, h: int) -> list[output.BitmapRect]:
        """One tile as one rectangle, or as halves, then quarters..., until each fits an update alone."""
        tile = frame[y:y + h, x:x + w]
        # Bitmap widths stay multiples of 4 (rdesktop and VRDP); the padding repeats the last column
        # and destRight clips it away.
        padded_width = (w + 3) & ~3
        if padded_width != w:
            tile = np.concatenate([tile, np.repeat(tile[:, -1:], padded_width - w, axis=1)], axis=1)
        tile = np.ascontiguousarray(tile)
        rect = self._encode_bitmap(tile, x, y, w, h)
        if BITMAP_UPDATE_HEADER + BITMAP_RECT_HEADER + len(rect.data) > self.update_budget and h > 1:
            half = h // 2
            return self._encode_tile(frame, x, y, w, half) + self._encode_tile(frame, x, y + half, w, h - half)
        return [rect]

    def _encode_bitmap(self, tile: np.ndarray, x: int, y: int, w: int, h: int) -> output.BitmapRect:
        bpp = self.bpp
        width = tile.shape[1]
        if bpp == 32:
            data = planar.compress(tile, bottom_up=True, allow_raw=False)
        else:
            data = rle.compress(tile, bpp, header=False)
            raw = convert.raw_bitmap(tile, bpp)
            if len(data) >= len(raw):
                return output.BitmapRect(x, y, x + w - 1, y + h - 1, width, h, bpp, 0, raw)
        flags = output.BITMAP_COMPRESSION
        if self.compression_header:
            # TS_CD_HEADER: cbCompFirstRowSize 0, main body size, scan width, uncompressed size.
            row = width * convert.BYTES_PER_PIXEL[bpp]
            data = struct.pack("<HHHH", 0, len(data), row, row * h) + data
        else:
            flags |= output.NO_BITMAP_COMPRESSION_HDR
        return output.BitmapRect(x, y, x + w - 1, y + h - 1, width, h, bpp, flags, data)

    def _batched_bitmap_updates(self, rects: list[output.BitmapRect]) -> Iterator[OutputPdu]:
        """As many rectangles to an update as its budget takes."""
        batch: list[output.BitmapRect] = []
        size = BITMAP_UPDATE_HEADER
        for rect in rects:
            rect_size = BITMAP_RECT_HEADER + len(rect.data)
            if batch and size + rect_size > self.update_budget:
                yield from self._update(output.bitmap_update_data(batch), output.FASTPATH_UPDATETYPE_BITMAP)
                batch, size = [], BITMAP_UPDATE_HEADER
            batch.append(rect)
            size += rect_size
        if batch:
            yield from self._update(output.bitmap_update_data(batch), output.FASTPATH_UPDATETYPE_BITMAP)

    def _update(self, data: bytes, fastpath_code: int) -> Iterator[OutputPdu]:
        """data: TS_UPDATE_BITMAP_DATA or TS_UPDATE_PALETTE_DATA (their updateType leads both forms)."""
        if self.fastpath:
            for body in output.fastpath_update_bodies(fastpath_code, data, self.multifragment_max,
                                                      encrypted=self.encrypted):
                yield FastPathOutput(body)
        else:
            yield SlowPathOutput(output.build_update_pdu(data, self.share_id))
