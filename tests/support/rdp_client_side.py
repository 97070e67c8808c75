"""What a scripted RDP client needs: its capability sets, and a canvas painted from the server's
bitmap updates; plus a test frame with gradients and noise to send through the encoders."""

import numpy as np

from services.vrdp.codecs import convert, planar, rle
from services.vrdp.pdu import capabilities, output


def client_caps(bpp=32, fastpath=True, multifragment=0xFFFF):
    extra = capabilities.NO_BITMAP_COMPRESSION_HDR | capabilities.LONG_CREDENTIALS_SUPPORTED
    if fastpath:
        extra |= capabilities.FASTPATH_OUTPUT_SUPPORTED
    sets = [capabilities.general_capability(extra), capabilities.bitmap_capability(bpp, 720, 400),
            capabilities.order_capability(), capabilities.input_capability()]
    if multifragment:
        sets.append(capabilities.multifragment_update_capability(multifragment))
    return sets


def frame_pattern(height, width):
    rng = np.random.default_rng(5)
    frame = np.zeros((height, width, 4), np.uint8)
    frame[..., 0] = np.arange(width, dtype=np.uint8)[None, :]
    frame[..., 1] = np.arange(height, dtype=np.uint8)[:, None]
    frame[100:140, 50:300, :3] = rng.integers(0, 256, (40, 250, 3), dtype=np.uint8)
    frame[..., 3] = 0xFF
    return frame


def paint(canvas, rect: output.BitmapRect, bpp):
    width, height = rect.width, rect.height
    # 64x64 at most: the size every client's codec context takes (FreeRDP's planar decoder
    # refuses a bitmap larger than its context since 2.11.7).
    assert width <= 64 and height <= 64, (width, height)
    if bpp == 32:
        assert rect.flags == output.BITMAP_COMPRESSION | output.NO_BITMAP_COMPRESSION_HDR
        tile = planar.decompress(rect.data, width, height)
    elif rect.flags & output.BITMAP_COMPRESSION:
        tile = rle.decompress(rect.data, width, height, bpp)
    else:
        pel = convert.BYTES_PER_PIXEL[bpp]
        raw = np.frombuffer(rect.data, np.uint8).reshape(height, width, pel)[::-1]
        values = raw[..., 0].astype(np.uint32) | raw[..., 1].astype(np.uint32) << 8
        if pel == 3:
            values |= raw[..., 2].astype(np.uint32) << 16
        tile = convert.values_to_bgrx(values, bpp)
    w = rect.dest_right - rect.dest_left + 1
    h = rect.dest_bottom - rect.dest_top + 1
    canvas[rect.dest_top:rect.dest_top + h, rect.dest_left:rect.dest_left + w] = tile[:h, :w, :3]
