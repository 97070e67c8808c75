"""The RDP output encoder on its own, without a connection: every update fits the framing the client
takes, tiles too big for one update are split, and the rectangles paint exactly the clipped areas."""

import numpy as np
import pytest

from services.vrdp.codecs import convert
from services.vrdp.output_encoder import (
    MAX_UPDATE_SIZE,
    SLOW_PATH_MAX_PAYLOAD,
    SLOW_PATH_SECURITY_HEADER,
    FastPathOutput,
    OutputEncoder,
    SlowPathOutput,
)
from services.vrdp.pdu import capabilities, output, share
from tests.support.rdp_client_side import frame_pattern, paint


def client(fastpath=True, multifragment=None, no_header=True):
    extra = (capabilities.FASTPATH_OUTPUT_SUPPORTED if fastpath else 0) | (
        capabilities.NO_BITMAP_COMPRESSION_HDR if no_header else 0)
    return capabilities.ClientCapabilities(extra_flags=extra, multifragment_max=multifragment)


def rects_of(pdus):
    """The bitmap rectangles the PDUs carry, fast-path fragments reassembled."""
    rects, pending = [], b""
    for pdu in pdus:
        if isinstance(pdu, SlowPathOutput):
            payload = share.parse_data_pdu(pdu.share_data)
            assert payload.pdu_type2 == share.PDUTYPE2_UPDATE
            rects += output.parse_bitmap_update_data(payload.payload)
            continue
        [update] = output.parse_fastpath_updates(pdu.body)
        pending += update.data
        if update.fragmentation in (output.FASTPATH_FRAGMENT_SINGLE, output.FASTPATH_FRAGMENT_LAST):
            rects += output.parse_bitmap_update_data(pending)
            pending = b""
    assert pending == b""
    return rects


def painted(rects, shape, bpp):
    canvas = np.zeros((*shape, 3), np.uint8)
    for rect in rects:
        paint(canvas, rect, bpp)
    return canvas


@pytest.mark.parametrize("fastpath, multifragment, encrypted", [
    (True, None, False), (True, None, True), (True, 0x3FFFFF, False), (False, None, False), (False, None, True)])
def test_updates_fit_their_framing(fastpath, multifragment, encrypted):
    encoder = OutputEncoder(720, 400, 32, client(fastpath, multifragment), 0x103EA, encrypted)
    noise = np.random.default_rng(2).integers(0, 256, (400, 720, 4), dtype=np.uint8)
    pdus = list(encoder.bitmap_updates(noise, [(0, 0, 720, 400)]))
    if fastpath:
        assert all(isinstance(p, FastPathOutput) for p in pdus)
        most = output.FASTPATH_MAX_PDU - output.FASTPATH_PDU_HEADER - (output.FASTPATH_SIGNATURE if encrypted else 0)
        assert max(len(p.body) for p in pdus) <= most
    else:
        assert all(isinstance(p, SlowPathOutput) for p in pdus)
        # The Send Data Indication's payload: the security header when encrypted, then the PDU.
        header = SLOW_PATH_SECURITY_HEADER if encrypted else 0
        assert max(header + len(p.share_data) for p in pdus) <= SLOW_PATH_MAX_PAYLOAD
    if multifragment:  # updates as large as rdesktop takes, in fragments
        assert encoder.update_budget == MAX_UPDATE_SIZE
        assert any(output.parse_fastpath_updates(p.body)[0].fragmentation != output.FASTPATH_FRAGMENT_SINGLE
                   for p in pdus)
    assert (painted(rects_of(pdus), (400, 720), 32) == noise[..., :3]).all()


def test_a_tile_larger_than_an_update_goes_in_parts():
    encoder = OutputEncoder(720, 400, 32, client(), 0x103EA, encrypted=False)
    encoder.update_budget = 3000  # a noisy 64x64 tile takes ~12 KB at 32 bpp
    noise = np.random.default_rng(2).integers(0, 256, (400, 720, 4), dtype=np.uint8)
    pdus = list(encoder.bitmap_updates(noise, [(0, 0, 128, 64)]))
    assert all(len(output.parse_fastpath_updates(p.body)[0].data) <= 3000 for p in pdus)
    rects = rects_of(pdus)
    assert len(rects) > 2 and all(r.dest_bottom - r.dest_top + 1 < 64 for r in rects)
    assert (painted(rects, (400, 720), 32)[:64, :128] == noise[:64, :128, :3]).all()


@pytest.mark.parametrize("bpp", [8, 15, 16, 24])
def test_rectangles_are_clipped_to_the_desktop_and_the_frame(bpp):
    encoder = OutputEncoder(300, 200, bpp, client(), 0x103EA, encrypted=False)
    frame = frame_pattern(250, 400)  # larger than the desktop: what lies outside is never sent
    rects = rects_of(encoder.bitmap_updates(frame, [(-10, -10, 50, 40), (290, 190, 100, 100), (61, 5, 3, 70)]))
    assert all(r.width % 4 == 0 for r in rects)
    canvas = painted(rects, (250, 400), bpp)
    expected = np.zeros_like(canvas)
    want = convert.quantise(frame, bpp)[..., :3]
    for x0, y0, x1, y1 in ((0, 0, 40, 30), (290, 190, 300, 200), (61, 5, 64, 75)):
        expected[y0:y1, x0:x1] = want[y0:y1, x0:x1]
    assert (canvas == expected).all()


def test_compression_header_unless_the_client_declines_it():
    frame = frame_pattern(400, 720)
    for no_header, flags in ((True, output.BITMAP_COMPRESSION | output.NO_BITMAP_COMPRESSION_HDR),
                             (False, output.BITMAP_COMPRESSION)):
        encoder = OutputEncoder(200, 200, 16, client(no_header=no_header), 0x103EA, encrypted=False)
        [rect] = rects_of(encoder.bitmap_updates(frame, [(0, 0, 64, 64)]))
        assert rect.flags == flags


def test_palette_update_for_8_bpp():
    encoder = OutputEncoder(200, 200, 8, client(), 0x103EA, encrypted=False)
    [pdu] = encoder.palette_update()
    [update] = output.parse_fastpath_updates(pdu.body)
    assert update.code == output.FASTPATH_UPDATETYPE_PALETTE and update.data == convert.palette_update_data()
