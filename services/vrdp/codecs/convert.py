"""Conversion from the display surface's B,G,R,X pixels to the RDP wire formats (8 bpp with a fixed
palette, RGB555, RGB565, B,G,R and B,G,R,X), and back for decoders and tests."""

from __future__ import annotations

import struct

import numpy as np

BYTES_PER_PIXEL = {8: 1, 15: 2, 16: 2, 24: 3, 32: 4}
UPDATETYPE_PALETTE = 0x0002


def _build_palette() -> np.ndarray:
    # A 6x6x6 colour cube keeps any colour within ~26 levels per channel; the 40 spare entries
    # become a grey ramp because desktops are mostly greys, which the cube covers only in 6 steps.
    levels = np.arange(6) * 51
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)  # r,g,b
    cube_greys = set(levels.tolist())
    ramp = [v for v in np.linspace(0, 255, 48).round().astype(int).tolist() if v not in cube_greys]
    ramp = ramp[:40]
    greys = np.array([[v, v, v] for v in ramp])
    return np.concatenate([cube, greys]).astype(np.uint8)


PALETTE = _build_palette()                          # (256, 3) r, g, b
_GREY_LEVELS = PALETTE[216:, 0].astype(np.int16)
# Nearest grey entry for each luminance value: a 256-entry lookup instead of a search per pixel.
_GREY_INDEX = (216 + np.abs(np.arange(256)[:, None] - _GREY_LEVELS[None, :]).argmin(1)
               ).astype(np.uint8)


def palette_update_data() -> bytes:
    """TS_UPDATE_PALETTE_DATA for PALETTE: the payload of both the slow-path and the fast-path
    palette update (MS-RDPBCGR 2.2.9.1.1.3.1.1)."""
    return struct.pack("<HHI", UPDATETYPE_PALETTE, 0, 256) + PALETTE.tobytes()


def _palette_indices(bgrx: np.ndarray) -> np.ndarray:
    b = bgrx[..., 0].astype(np.int16)
    g = bgrx[..., 1].astype(np.int16)
    r = bgrx[..., 2].astype(np.int16)
    qr, qg, qb = (r + 25) // 51, (g + 25) // 51, (b + 25) // 51
    cube = (qr * 36 + qg * 6 + qb).astype(np.uint8)
    cube_err = np.abs(r - qr * 51) + np.abs(g - qg * 51) + np.abs(b - qb * 51)
    grey = _GREY_INDEX[(r + g + b) // 3]
    level = PALETTE[grey, 0].astype(np.int16)
    grey_err = np.abs(r - level) + np.abs(g - level) + np.abs(b - level)
    return np.where(grey_err < cube_err, grey, cube)


def pixel_values(bgrx: np.ndarray, bpp: int) -> np.ndarray:
    """The (h, w) array of wire pixel values: uint8 palette indices at 8 bpp, uint16 RGB555/RGB565
    at 15/16 bpp, uint32 0xRRGGBB at 24 bpp and the whole B,G,R,X word at 32 bpp."""
    if bpp == 8:
        return _palette_indices(bgrx)
    if bpp == 32:
        return np.ascontiguousarray(bgrx).view("<u4")[..., 0]
    b = bgrx[..., 0].astype(np.uint32)
    g = bgrx[..., 1].astype(np.uint32)
    r = bgrx[..., 2].astype(np.uint32)
    if bpp == 24:
        return (r << 16) | (g << 8) | b
    if bpp == 16:
        return ((r >> 3) << 11 | (g >> 2) << 5 | (b >> 3)).astype(np.uint16)
    if bpp == 15:
        return ((r >> 3) << 10 | (g >> 3) << 5 | (b >> 3)).astype(np.uint16)
    raise ValueError(f"unsupported colour depth {bpp}")


def values_to_bytes(values: np.ndarray, bpp: int) -> np.ndarray:
    """Little-endian wire bytes of pixel values, shape (..., Bpp); 24 bpp keeps B,G,R."""
    if bpp == 8:
        return values.astype(np.uint8)[..., None]
    if bpp in (15, 16):
        return values.astype("<u2")[..., None].view(np.uint8)
    bytes4 = values.astype("<u4")[..., None].view(np.uint8)
    return bytes4[..., :3] if bpp == 24 else bytes4


def raw_bitmap(bgrx: np.ndarray, bpp: int) -> bytes:
    """An uncompressed TS_BITMAP_DATA payload: rows bottom-up, width x Bpp bytes each, no
    padding (send flags 0)."""
    if bpp == 32:
        return np.ascontiguousarray(bgrx[::-1]).tobytes()
    if bpp == 24:
        return np.ascontiguousarray(bgrx[::-1, :, :3]).tobytes()
    return values_to_bytes(pixel_values(bgrx[::-1], bpp), bpp).tobytes()


def _expand(channel: np.ndarray, bits: int) -> np.ndarray:
    # Replicating the top bits into the low ones is what FreeRDP and Windows do, so a decoded
    # white is 255 rather than 248.
    channel = channel.astype(np.uint16)
    return ((channel << (8 - bits)) | (channel >> (2 * bits - 8))).astype(np.uint8)


def values_to_bgrx(values: np.ndarray, bpp: int) -> np.ndarray:
    """The (h, w, 4) B,G,R,X image of wire pixel values (X = 0xFF)."""
    values = np.asarray(values)
    out = np.full(values.shape + (4,), 0xFF, np.uint8)
    if bpp == 8:
        out[..., 2::-1] = PALETTE[values]
    elif bpp == 15:
        out[..., 2] = _expand((values >> 10) & 0x1F, 5)
        out[..., 1] = _expand((values >> 5) & 0x1F, 5)
        out[..., 0] = _expand(values & 0x1F, 5)
    elif bpp == 16:
        out[..., 2] = _expand((values >> 11) & 0x1F, 5)
        out[..., 1] = _expand((values >> 5) & 0x3F, 6)
        out[..., 0] = _expand(values & 0x1F, 5)
    elif bpp in (24, 32):
        v = values.astype(np.uint32)
        out[..., 0] = v & 0xFF
        out[..., 1] = (v >> 8) & 0xFF
        out[..., 2] = (v >> 16) & 0xFF
    else:
        raise ValueError(f"unsupported colour depth {bpp}")
    return out


def quantise(bgrx: np.ndarray, bpp: int) -> np.ndarray:
    """What a client shows for `bgrx` sent at `bpp` (X = 0xFF): the lossless reference for tests."""
    return values_to_bgrx(pixel_values(bgrx, bpp), bpp)
