"""The display surface as other processes read it: a shared-memory region ("surface") holding the
current frame (B,G,R,X) after a header with its geometry. The vCPU process writes it
(services/hw/display/surface.py renders into it); the RDP server and tests read it."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"HBXSURF1"
HEADER = struct.Struct("<8sIIIIII")    # magic, version, sequence, width, height, stride, bpp
VERSION = 1
MAX_WIDTH, MAX_HEIGHT = 2560, 1600     # the largest frame the region holds (VBE's largest mode)
FRAME_OFFSET = 4096                    # page-aligned pixels, whatever the header grows to
FRAME_BYTES = MAX_WIDTH * MAX_HEIGHT * 4
REGION_SIZE = FRAME_OFFSET + FRAME_BYTES


@dataclass(frozen=True)
class SurfaceHeader:
    sequence: int
    width: int
    height: int
    stride: int
    bpp: int


def write_header(region, sequence: int, width: int, height: int, bpp: int) -> None:
    HEADER.pack_into(region.buf, 0, MAGIC, VERSION, sequence, width, height, width * 4, bpp)


def read_header(region) -> SurfaceHeader:
    """The geometry a reader (the RDP server) finds at the start of the region."""
    magic, version, sequence, width, height, stride, bpp = HEADER.unpack_from(region.buf, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError("the shared region does not hold a Headbox display surface")
    return SurfaceHeader(sequence, width, height, stride, bpp)


def frame_view(region, header: SurfaceHeader | None = None) -> np.ndarray:
    """The frame in `region` as a (height, width, 4) uint8 array over the shared memory (no copy)."""
    header = header or read_header(region)
    pixels = np.frombuffer(region.buf, dtype=np.uint8, count=header.stride * header.height,
                           offset=FRAME_OFFSET)
    return pixels.reshape(header.height, header.stride)[:, :header.width * 4].reshape(
        header.height, header.width, 4)
