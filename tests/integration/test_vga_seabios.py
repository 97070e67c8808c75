"""Acceptance: SeaBIOS runs Debian's SeaVGABIOS on our std VGA under tcg, the VGA BIOS finds DISPI and
the LFB in BAR0, and the banner SeaBIOS prints appears as text in the rendered frame."""

import re
import threading
import time

import numpy as np

from services.hw.display import vgabios
from services.hw.display.pci import RECOMMENDED_SLOT
from services.hw.display.render import Renderer
from services.hw.display.surface import DisplaySurface
from services.hw.display.vga import StdVga
from services.hw.memory import GuestMemory, MiB
from services.ipc.shm import PrivateRegion
from services.ipc.surface import REGION_SIZE
from services.vcpu.engine import StopReason, create_engine
from services.vcpu.platform import build_platform

SEABIOS = "/usr/share/seabios/bios.bin"
END_OF_POST = b"No bootable device."
BANNER = "SeaBIOS (version 1.16.2"


def boot_with_vga(timeout: float = 60.0):
    with open(SEABIOS, "rb") as f:
        memory = GuestMemory(PrivateRegion(128 * MiB), f.read())
    memory.load_firmware_shadow()
    output = bytearray()
    engine = None
    bus = build_platform(memory, debug_sink=output.extend,
                         reset=lambda: engine.request_stop(StopReason.RESET),
                         poweroff=lambda: engine.request_stop(StopReason.POWEROFF))
    vga = StdVga(PrivateRegion(16 * MiB))
    vga.attach(bus)
    lfb_moves = []

    def mmio_moved(address):
        # This bus cannot move a range, and SeaBIOS places BARs once: map the page where it lands.
        if address is not None and "vga-mmio" not in bus.devices():
            bus.register(function.mmio, "mmio", address, 0x1000, name="vga-mmio")

    function = vga.pci_function(on_lfb_change=lfb_moves.append, on_mmio_change=mmio_moved)
    bus.device("pci").root.add(function, RECOMMENDED_SLOT)
    vgabios.install_vgabios(bus.device("fw_cfg"))
    engine = create_engine("tcg", memory, bus, 1)
    start = time.monotonic()

    def watch():
        while END_OF_POST not in output and time.monotonic() - start < timeout:
            time.sleep(0.005)
        engine.request_stop(StopReason.PAUSED)

    threading.Thread(target=watch, daemon=True).start()
    try:
        reason = engine.run()
    finally:
        engine.close()
    assert reason == StopReason.PAUSED, output.decode("latin-1")
    return vga, function, lfb_moves, output.decode("latin-1")


def screen_text(vga, mode) -> list[str]:
    cells = np.frombuffer(vga.vram, dtype=np.uint8)[mode.start:mode.start + mode.rows * mode.stride]
    chars = cells.reshape(mode.rows, mode.stride)[:, 0:mode.columns * 4:4]
    return [bytes(row).decode("latin-1").rstrip("\0 ") for row in chars]


def test_seavgabios_text_banner_renders(tmp_path):
    vga, function, lfb_moves, log = boot_with_vga()
    assert "No VBE DISPI interface detected" not in log
    assert re.search(r"VBE DISPI: bdf 00:02\.0, bar 0", log), log
    lfb = int(re.search(r"VBE DISPI: lfb_addr=([0-9a-f]+), size 16 MB", log).group(1), 16)
    assert lfb == function.lfb_address and lfb_moves[-1] == lfb

    mode = vga.mode()
    assert (mode.kind, mode.columns, mode.rows, mode.width, mode.height) == ("text", 80, 25, 720, 400)
    lines = screen_text(vga, mode)
    row = next(i for i, line in enumerate(lines) if line.startswith(BANNER))
    assert any("No bootable device." in line for line in lines)

    frame = Renderer(vga).render().view(np.uint32)[..., 0]
    # Each character cell of the banner must show exactly the glyph SeaVGABIOS loaded into plane 2.
    vram = np.frombuffer(vga.vram, dtype=np.uint8)
    font = vram[2:2 + 256 * 32 * 4:4].reshape(256, 32)[:, :16]
    ch, cw = mode.cell_height, mode.cell_width
    for col, char in enumerate(BANNER):
        glyph = np.unpackbits(font[ord(char)][:, None], axis=1).astype(bool)
        cell = frame[row * ch:(row + 1) * ch, col * cw:col * cw + 8]
        if char == " ":
            assert not glyph.any() and (cell == cell[0, 0]).all()
            continue
        foreground, background = cell[glyph], cell[~glyph]
        assert (foreground == foreground[0]).all() and (background == background[0]).all(), char
        assert foreground[0] != background[0], char

    surface = DisplaySurface(vga, PrivateRegion(REGION_SIZE))
    update = surface.refresh(now=0.0)
    assert update.mode_changed and (update.width, update.height) == (720, 400)
    surface.screenshot_png(str(tmp_path / "seabios.png"))
    assert (tmp_path / "seabios.png").stat().st_size > 1000
