"""The shared display surface: frames published into shared memory with their geometry, damage as
tile rectangles after small changes, mode changes, and PNG screenshots that pillow reads back."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from services.hw.display import dispi
from services.hw.display.surface import DisplaySurface, damaged_tiles
from services.ipc import surface as surf
from services.ipc.shm import PrivateRegion, SharedRegion
from services.ipc.surface import frame_view, read_header
from tests.support.vga_guest import FONT, Guest, text_colour


@pytest.fixture
def vbe_surface():
    guest = Guest()
    guest.vbe(1024, 768, 32)
    region = PrivateRegion(surf.REGION_SIZE)
    return guest, DisplaySurface(guest.vga, region, clock=lambda: 0.0)


def pixels(guest):
    return np.frombuffer(guest.vga.vram, dtype=np.uint32)


def test_first_refresh_is_a_mode_change_with_the_whole_screen(vbe_surface):
    guest, surface = vbe_surface
    update = surface.refresh()
    assert update.mode_changed and (update.width, update.height, update.bpp) == (1024, 768, 32)
    assert update.rects == [(0, 0, 1024, 768)]
    header = read_header(surface.region)
    assert (header.width, header.height, header.stride, header.bpp) == (1024, 768, 4096, 32)
    assert header.sequence == update.sequence


def test_no_change_no_damage(vbe_surface):
    _, surface = vbe_surface
    surface.refresh()
    update = surface.refresh()
    assert not update.mode_changed and update.rects == []


def test_small_changes_damage_their_tiles(vbe_surface):
    guest, surface = vbe_surface
    surface.refresh()
    px = pixels(guest)
    px[10 * 1024 + 10] = 0xFF0000                   # tile (0, 0)
    px[700 * 1024 + 1000] = 0x00FF00                # tile (15, 10): last column, row 700 // 64
    px[100 * 1024 + 64] = px[100 * 1024 + 191] = 1  # tiles (1, 1) and (2, 1): one run
    update = surface.refresh()
    assert sorted(update.rects) == [(0, 0, 64, 64), (64, 64, 128, 64), (960, 640, 64, 64)]
    frame = frame_view(surface.region)
    assert frame.view(np.uint32)[10, 10, 0] == 0xFF0000
    assert frame.view(np.uint32)[700, 1000, 0] == 0x00FF00


def test_vertical_runs_merge_and_edges_are_clipped():
    old = np.zeros((100, 130, 4), dtype=np.uint8)
    new = old.copy()
    new[0, 0] = new[70, 5] = 1                      # tile column 0, tile rows 0 and 1
    new[99, 129] = 1                                # bottom-right partial tile
    assert damaged_tiles(old, new) == [(0, 0, 64, 100), (128, 64, 2, 36)]


def test_mode_change_is_reported_with_the_new_geometry(vbe_surface):
    guest, surface = vbe_surface
    surface.refresh()
    guest.vbe(800, 600, 16)
    update = surface.refresh()
    assert update.mode_changed and (update.width, update.height, update.bpp) == (800, 600, 16)
    assert update.rects == [(0, 0, 800, 600)]
    assert read_header(surface.region).stride == 3200


def test_text_mode_surface_and_blinking_cursor_damage():
    guest = Guest()
    guest.text_mode(FONT)
    now = [0.0]
    surface = DisplaySurface(guest.vga, PrivateRegion(surf.REGION_SIZE), clock=lambda: now[0])
    guest.put(0, 0, "H", 0x0F)
    update = surface.refresh()
    assert (update.width, update.height) == (720, 400)
    assert surface.frame.view(np.uint32)[4, 0, 0] == text_colour(15)
    now[0] = 0.3                                    # cursor blink phase flips: its cell's tile only
    update = surface.refresh()
    assert update.rects == [(0, 0, 64, 64)]


def test_screenshot_png_reads_back(vbe_surface, tmp_path):
    guest, surface = vbe_surface
    px = pixels(guest)
    px[0] = 0x00112233
    px[767 * 1024 + 1023] = 0x00ABCDEF
    surface.refresh()
    path = tmp_path / "shot.png"
    surface.screenshot_png(str(path))
    with Image.open(path) as image:
        assert image.size == (1024, 768) and image.mode == "RGB"
        assert image.getpixel((0, 0)) == (0x11, 0x22, 0x33)
        assert image.getpixel((1023, 767)) == (0xAB, 0xCD, 0xEF)
    buffer = io.BytesIO()
    surface.screenshot_png(buffer)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_another_process_view_through_shared_memory(tmp_path):
    guest = Guest()
    guest.vbe(640, 480, 32)
    name = f"headbox-test-surface-{os.getpid()}"
    with SharedRegion.create(name, surf.REGION_SIZE) as region:
        surface = DisplaySurface(guest.vga, region)
        pixels(guest)[0] = 0x0000FF
        surface.refresh()
        reader = SharedRegion.open(name)
        try:
            frame = frame_view(reader)
            assert frame.shape == (480, 640, 4) and tuple(frame[0, 0]) == (0xFF, 0, 0, 0)
            del frame
        finally:
            reader.close()


def test_region_too_small_is_refused():
    with pytest.raises(ValueError, match="needs"):
        DisplaySurface(Guest().vga, PrivateRegion(1 << 20))


def test_the_region_holds_the_largest_mode_the_vga_offers():
    assert dispi.MAX_XRES <= surf.MAX_WIDTH and dispi.MAX_YRES <= surf.MAX_HEIGHT
