"""Interleaved RLE for legacy bitmap updates at 8/15/16/24 bpp (MS-RDPBCGR 2.2.9.1.1.3.1.2.4): an
encoder using background runs, colour runs and colour images, and a decoder for every order."""

from __future__ import annotations

import struct

import numpy as np

from services.vrdp.codecs.convert import (
    BYTES_PER_PIXEL,
    pixel_values,
    values_to_bgrx,
    values_to_bytes,
)

BITMAP_COMPRESSION = 0x0001
NO_BITMAP_COMPRESSION_HDR = 0x0400

(REGULAR_BG_RUN, REGULAR_FG_RUN, REGULAR_FGBG_IMAGE, REGULAR_COLOR_RUN,
 REGULAR_COLOR_IMAGE) = range(5)
MEGA_MEGA = 0xF0                       # 0xF0 | regular code, then a u16 length
LITE_SET_FG_FG_RUN, LITE_SET_FG_FGBG_IMAGE, LITE_DITHERED_RUN = 0xC, 0xD, 0xE
MEGA_MEGA_SET_FG_RUN, MEGA_MEGA_SET_FGBG_IMAGE, MEGA_MEGA_DITHERED_RUN = 0xF6, 0xF7, 0xF8
SPECIAL_FGBG_1, SPECIAL_FGBG_2, WHITE, BLACK = 0xF9, 0xFA, 0xFD, 0xFE
MAX_RUN = 0xFFFF

# A background run of one pixel or a colour run of two saves less than the colour-image header it
# breaks up; these are the shortest runs worth an order of their own.
MIN_BG_RUN = 2
MIN_COLOR_RUN = 3


def bitmap_flags(header: bool) -> int:
    """TS_BITMAP_DATA flags for a compress() payload made with or without the TS_CD_HEADER."""
    return BITMAP_COMPRESSION if header else BITMAP_COMPRESSION | NO_BITMAP_COMPRESSION_HDR


def _order(out: bytearray, code: int, length: int) -> None:
    if length < 32:
        out.append(code << 5 | length)
    elif length < 32 + 256:
        out += bytes((code << 5, length - 32))
    else:
        out += struct.pack("<BH", MEGA_MEGA | code, length)


def _true_run_lengths(mask: np.ndarray) -> np.ndarray:
    """For each index, how many consecutive True values start there (0 where mask is False)."""
    n = mask.size
    index = np.arange(n)
    next_false = np.where(mask, n, index)
    next_false = np.minimum.accumulate(next_false[::-1])[::-1]
    return next_false - index


def compress(bgrx: np.ndarray, bpp: int, header: bool = False) -> bytes:
    """The compressed TS_BITMAP_DATA payload of a (h, w, 4) B,G,R,X tile at 8/15/16/24 bpp, rows
    bottom-up; with `header` it starts with the TS_CD_HEADER (send bitmap_flags(header))."""
    if bpp not in (8, 15, 16, 24):
        raise ValueError(f"interleaved RLE has no {bpp} bpp form")
    height, width = bgrx.shape[:2]
    pel = BYTES_PER_PIXEL[bpp]
    flat = pixel_values(bgrx[::-1], bpp).ravel()
    raw = values_to_bytes(flat, bpp).tobytes()
    n = flat.size
    # A background run copies the pixel one scanline below on screen (the previous wire row).
    # It never starts on the first wire row: FreeRDP paints a whole run that starts there black,
    # rdesktop only the part on that row, so any such run would decode differently.
    same_as_above = np.zeros(n, bool)
    same_as_above[width:] = flat[width:] == flat[:-width]
    bg_len = _true_run_lengths(same_as_above)
    same_as_prev = np.zeros(n + 1, bool)
    same_as_prev[1:n] = flat[1:] == flat[:-1]
    color_len = 1 + _true_run_lengths(same_as_prev)[1:]
    worth = (bg_len >= MIN_BG_RUN) | (color_len >= MIN_COLOR_RUN)
    index = np.arange(n + 1)
    next_worth = np.where(np.append(worth, True), index, n)
    next_worth = np.minimum.accumulate(next_worth[::-1])[::-1]

    bg_len_l, color_len_l, next_worth_l = bg_len.tolist(), color_len.tolist(), next_worth.tolist()
    out = bytearray()
    i = 0
    after_bg = False
    while i < n:
        # Two background runs in a row make the decoder XOR the foreground colour into the first
        # pixel of the second (fInsertFgPel); a run longer than MAX_RUN continues differently.
        bg = 0 if after_bg else bg_len_l[i]
        color = color_len_l[i]
        if bg >= MIN_BG_RUN and bg >= color:
            count = min(bg, MAX_RUN)
            _order(out, REGULAR_BG_RUN, count)
            after_bg = True
        elif color >= MIN_COLOR_RUN:
            count = min(color, MAX_RUN)
            _order(out, REGULAR_COLOR_RUN, count)
            out += raw[i * pel:(i + 1) * pel]
            after_bg = False
        else:
            count = min(next_worth_l[i + 1] - i, MAX_RUN)
            _order(out, REGULAR_COLOR_IMAGE, count)
            out += raw[i * pel:(i + count) * pel]
            after_bg = False
        i += count
    if not header:
        return bytes(out)
    scan_width = width * pel
    return struct.pack("<HHHH", 0, len(out), scan_width, scan_width * height) + out


_WHITE = {8: 0xFF, 15: 0x7FFF, 16: 0xFFFF, 24: 0xFFFFFF}


def decompress_values(data: bytes, width: int, height: int, bpp: int,
                      header: bool = False) -> np.ndarray:
    """Decode an interleaved RLE payload into (height, width) wire pixel values, top row first."""
    pel = BYTES_PER_PIXEL[bpp]
    if header:
        _, body_size, _, _ = struct.unpack_from("<HHHH", data)
        data = data[8:8 + body_size]
    n = width * height
    out = [0] * n
    pos = 0
    i = 0
    fg = _WHITE[bpp]
    insert_fg = False
    first_line = True

    def pixel() -> int:
        nonlocal pos
        value = int.from_bytes(data[pos:pos + pel], "little")
        pos += pel
        return value

    def above(k: int) -> int:
        # Like FreeRDP, an order that starts on the first row treats the row below as black
        # throughout, even where it runs on into the second row.
        return 0 if first_line else out[k - width]

    def fgbg(bits: int, count: int) -> None:
        nonlocal i
        for bit in range(count):
            out[i] = above(i) ^ fg if bits >> bit & 1 else above(i)
            i += 1

    while pos < len(data):
        if first_line and i >= width:
            first_line = False
            insert_fg = False
        head = data[pos]
        pos += 1
        if head >> 4 == 0xF:
            code = head
            if head <= 0xF8:
                length = struct.unpack_from("<H", data, pos)[0]
                pos += 2
        elif head >> 6 == 3:
            code = head >> 4
            length = head & 0x0F
            if code == LITE_SET_FG_FGBG_IMAGE:
                length = length * 8 if length else data[pos] + 1
                pos += 0 if head & 0x0F else 1
            elif not length:
                length = data[pos] + 16
                pos += 1
        else:
            code = head >> 5
            length = head & 0x1F
            if code == REGULAR_FGBG_IMAGE:
                length = length * 8 if length else data[pos] + 1
                pos += 0 if head & 0x1F else 1
            elif not length:
                length = data[pos] + 32
                pos += 1
        if code in (REGULAR_BG_RUN, MEGA_MEGA | REGULAR_BG_RUN):
            end = i + length
            if insert_fg:
                out[i] = above(i) ^ fg
                i += 1
            while i < end:
                out[i] = above(i)
                i += 1
            insert_fg = True
            continue
        insert_fg = False
        if code in (LITE_SET_FG_FG_RUN, MEGA_MEGA_SET_FG_RUN, LITE_SET_FG_FGBG_IMAGE,
                    MEGA_MEGA_SET_FGBG_IMAGE):
            fg = pixel()
        if code in (REGULAR_FG_RUN, MEGA_MEGA | REGULAR_FG_RUN, LITE_SET_FG_FG_RUN,
                    MEGA_MEGA_SET_FG_RUN):
            for _ in range(length):
                out[i] = above(i) ^ fg
                i += 1
        elif code in (REGULAR_COLOR_RUN, MEGA_MEGA | REGULAR_COLOR_RUN):
            value = pixel()
            out[i:i + length] = [value] * length
            i += length
        elif code in (REGULAR_COLOR_IMAGE, MEGA_MEGA | REGULAR_COLOR_IMAGE):
            for _ in range(length):
                out[i] = pixel()
                i += 1
        elif code in (LITE_DITHERED_RUN, MEGA_MEGA_DITHERED_RUN):
            a, b = pixel(), pixel()
            for _ in range(length):
                out[i], out[i + 1] = a, b
                i += 2
        elif code in (REGULAR_FGBG_IMAGE, MEGA_MEGA | REGULAR_FGBG_IMAGE, LITE_SET_FG_FGBG_IMAGE,
                      MEGA_MEGA_SET_FGBG_IMAGE):
            while length > 0:
                count = min(length, 8)
                fgbg(data[pos], count)
                pos += 1
                length -= count
        elif code == SPECIAL_FGBG_1:
            fgbg(0x03, 8)
        elif code == SPECIAL_FGBG_2:
            fgbg(0x05, 8)
        elif code == WHITE:
            out[i] = _WHITE[bpp]
            i += 1
        elif code == BLACK:
            out[i] = 0
            i += 1
        else:
            raise ValueError(f"unknown interleaved RLE order 0x{head:02x}")
    if i != n:
        raise ValueError(f"interleaved RLE payload holds {i} pixels, not {n}")
    dtype = np.uint8 if bpp == 8 else np.uint16 if bpp in (15, 16) else np.uint32
    return np.array(out, dtype).reshape(height, width)[::-1]


def decompress(data: bytes, width: int, height: int, bpp: int, header: bool = False) -> np.ndarray:
    """Decode an interleaved RLE payload into a (height, width, 4) B,G,R,X image, top row first."""
    return values_to_bgrx(decompress_values(data, width, height, bpp, header), bpp)
