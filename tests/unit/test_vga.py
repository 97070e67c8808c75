"""The std VGA's registers as guests use them: the DISPI handshake and GETCAPS, VGA ports, the legacy
window's memory modes (chain-4, odd/even, planar write/read modes with latches), PCI BARs, state."""

import pytest

from services.hw.bus import Bus
from services.hw.chipset.fw_cfg import FwCfg
from services.hw.chipset.pci import COMMAND, PciConfigIo, PciRoot
from services.hw.display import dispi, vgabios
from services.hw.display import pci as vga_pci
from services.hw.display.edid import build_edid
from services.hw.display.vga import StdVga
from services.ipc.shm import PrivateRegion

VRAM = 16 << 20


@pytest.fixture
def card():
    modes = []
    vga = StdVga(PrivateRegion(VRAM), on_mode_change=modes.append)
    bus = Bus()
    vga.attach(bus)
    vga.modes = modes
    return vga, bus


def dispi_write(bus, index, value):
    bus.pio_write(0x1CE, 2, index)
    bus.pio_write(0x1CF, 2, value)


def dispi_read(bus, index):
    bus.pio_write(0x1CE, 2, index)
    return bus.pio_read(0x1CF, 2)


def seq(bus, index, value):
    bus.pio_write(0x3C4, 2, index | value << 8)


def gfx(bus, index, value):
    bus.pio_write(0x3CE, 2, index | value << 8)


# -- DISPI ------------------------------------------------------------------------------------------
def test_dispi_id_handshake_as_seavgabios_does(card):
    _, bus = card
    assert dispi_read(bus, dispi.ID) == 0xB0C5
    dispi_write(bus, dispi.ID, 0xB0C0)
    assert dispi_read(bus, dispi.ID) == 0xB0C0
    dispi_write(bus, dispi.ID, 0xB0C5)
    assert dispi_read(bus, dispi.ID) == 0xB0C5
    dispi_write(bus, dispi.ID, 0x1234)              # not an interface version: ignored
    assert dispi_read(bus, dispi.ID) == 0xB0C5
    assert dispi_read(bus, dispi.VIDEO_MEMORY_64K) == VRAM >> 16


def test_getcaps_reports_maxima_then_the_registers_again(card):
    _, bus = card
    dispi_write(bus, dispi.XRES, 640)
    en = dispi_read(bus, dispi.ENABLE)
    dispi_write(bus, dispi.ENABLE, en | dispi.GETCAPS)
    assert (dispi_read(bus, dispi.XRES), dispi_read(bus, dispi.YRES), dispi_read(bus, dispi.BPP)) == \
        (2560, 1600, 32)
    dispi_write(bus, dispi.ENABLE, en)
    assert dispi_read(bus, dispi.XRES) == 640


def set_vbe(bus, width, height, bpp, flags=dispi.LFB_ENABLED):
    dispi_write(bus, dispi.ENABLE, 0)
    dispi_write(bus, dispi.BPP, bpp)
    dispi_write(bus, dispi.XRES, width)
    dispi_write(bus, dispi.YRES, height)
    dispi_write(bus, dispi.BANK, 0)
    dispi_write(bus, dispi.ENABLE, dispi.ENABLED | flags)


def test_vbe_mode_set_reports_the_mode_once_and_clears_vram(card):
    vga, bus = card
    vga.vram_bytes[:16] = b"\x55" * 16
    set_vbe(bus, 1024, 768, 32)
    assert vga.modes[-1].geometry == (1024, 768, 32)
    assert [m.kind for m in vga.modes] == ["vbe"]
    assert vga.mode().stride == 4096
    assert bytes(vga.vram_bytes[:16]) == bytes(16)
    assert dispi_read(bus, dispi.VIRT_WIDTH) == 1024
    assert dispi_read(bus, dispi.VIRT_HEIGHT) == VRAM // 4096


def test_noclearmem_keeps_vram_and_nonsense_is_clamped(card):
    vga, bus = card
    vga.vram_bytes[:4] = b"\x01\x02\x03\x04"
    set_vbe(bus, 5000, 0, 7, dispi.LFB_ENABLED | dispi.NOCLEARMEM)
    assert bytes(vga.vram_bytes[:4]) == b"\x01\x02\x03\x04"
    assert vga.mode().geometry == (2560, 1, 8)


def test_virtual_width_and_panning_move_the_origin(card):
    vga, bus = card
    set_vbe(bus, 800, 600, 16)
    dispi_write(bus, dispi.VIRT_WIDTH, 1024)
    dispi_write(bus, dispi.X_OFFSET, 16)
    dispi_write(bus, dispi.Y_OFFSET, 10)
    mode = vga.mode()
    assert mode.stride == 2048 and mode.start == 10 * 2048 + 32


def test_banked_window_in_a_vbe_mode(card):
    vga, bus = card
    set_vbe(bus, 640, 480, 8, 0)
    dispi_write(bus, dispi.BANK, 3)
    assert dispi_read(bus, dispi.BANK) == 3
    bus.mmio_write(0xA0010, 2, 0xBEEF)
    assert bytes(vga.vram_bytes[3 * 0x10000 + 0x10:3 * 0x10000 + 0x12]) == b"\xef\xbe"
    assert bus.mmio_read(0xA0010, 2) == 0xBEEF
    assert bus.mmio_read(0xB0000, 1) == 0xFF        # outside the 64 KiB window


# -- VGA ports --------------------------------------------------------------------------------------
def test_attribute_controller_flip_flop_is_reset_by_input_status(card):
    vga, bus = card
    bus.pio_read(0x3DA, 1)
    bus.pio_write(0x3C0, 1, 0x01)
    bus.pio_write(0x3C0, 1, 0x3F)
    bus.pio_write(0x3C0, 1, 0x20)                   # back to index state: palette source on
    assert vga.ar[1] == 0x3F and bus.pio_read(0x3C0, 1) == 0x20
    bus.pio_write(0x3C0, 1, 0x10)                   # index: mode control, then no data...
    bus.pio_read(0x3DA, 1)                          # ...because reading 0x3DA resets the flip-flop
    bus.pio_write(0x3C0, 1, 0x33)                   # so this is an index (pixel panning)
    bus.pio_write(0x3C0, 1, 0x05)
    assert vga.ar[0x10] == 0 and vga.ar[0x13] == 0x05
    assert vga.ar_index == 0x33 and bus.pio_read(0x3C1, 1) == 0x05


def test_input_status_toggles_retrace_so_polling_loops_end(card):
    _, bus = card
    first = bus.pio_read(0x3DA, 1) & 0x08
    second = bus.pio_read(0x3DA, 1) & 0x08
    assert first != second


def test_mono_aliases_follow_misc_output(card):
    vga, bus = card
    bus.pio_write(0x3C2, 1, 0x66)                   # I/O address select clear: mono ports
    bus.pio_write(0x3B4, 2, 0x0E | 0x12 << 8)
    assert vga.cr[0x0E] == 0x12
    assert bus.pio_read(0x3D5, 1) == 0xFF
    bus.pio_write(0x3C2, 1, 0x67)
    assert bus.pio_read(0x3CC, 1) == 0x67
    bus.pio_write(0x3D4, 1, 0x0E)
    assert bus.pio_read(0x3D5, 1) == 0x12
    assert bus.pio_read(0x3BA, 1) == 0xFF


def test_crtc_write_protect(card):
    vga, bus = card
    bus.pio_write(0x3D4, 2, 0x11 | 0x80 << 8)
    bus.pio_write(0x3D4, 2, 0x01 | 0x4F << 8)
    bus.pio_write(0x3D4, 2, 0x07 | 0xFF << 8)
    assert vga.cr[0x01] == 0 and vga.cr[0x07] == 0x10


def test_sequencer_and_graphics_registers_keep_only_their_bits(card):
    _, bus = card
    seq(bus, 2, 0xFF)
    gfx(bus, 5, 0xFF)
    bus.pio_write(0x3C4, 1, 2)
    bus.pio_write(0x3CE, 1, 5)
    assert bus.pio_read(0x3C5, 1) == 0x0F and bus.pio_read(0x3CF, 1) == 0x7B


def test_dac_entries_read_back_and_eight_bit_switch(card):
    vga, bus = card
    bus.pio_write(0x3C8, 1, 5)
    for v in (63, 32, 1, 10, 20, 30):
        bus.pio_write(0x3C9, 1, v)
    bus.pio_write(0x3C7, 1, 5)
    assert bus.pio_read(0x3C7, 1) == 3
    assert [bus.pio_read(0x3C9, 1) for _ in range(6)] == [63, 32, 1, 10, 20, 30]
    assert vga.dac.colors()[5] == 0xFF8204           # 6-bit components scaled to 8 bits
    bus.pio_write(0x3C8, 1, 7)
    for v in (0xFF, 0x80, 0x01):
        bus.pio_write(0x3C9, 1, v)
    assert vga.dac.colors(eight_bit=True)[7] == 0xFF8001
    set_vbe(bus, 640, 480, 8, dispi.DAC_8BIT)
    assert vga.eight_bit_dac


# -- the legacy window ------------------------------------------------------------------------------
def planar(vga, addr):
    return bytes(vga.vram_bytes[addr * 4:addr * 4 + 4])


def set_planar_mode(bus):
    seq(bus, 4, 0x06)                               # no chain-4, no odd/even
    seq(bus, 2, 0x0F)
    gfx(bus, 5, 0x00)
    gfx(bus, 6, 0x05)                               # graphics, A0000 64 KiB


def test_chain4_writes_bytes_in_order(card):
    vga, bus = card
    seq(bus, 4, 0x0E)
    seq(bus, 2, 0x0F)
    gfx(bus, 5, 0x40)
    gfx(bus, 6, 0x05)
    bus.mmio_write(0xA0000 + 321, 1, 0x2A)
    bus.mmio_write(0xA0004, 4, 0x04030201)
    assert vga.vram_bytes[321] == 0x2A
    assert bytes(vga.vram_bytes[4:8]) == b"\x01\x02\x03\x04"
    assert bus.mmio_read(0xA0004, 4) == 0x04030201
    seq(bus, 2, 0x01)                               # map mask leaves planes 1-3 alone
    bus.mmio_write(0xA0004, 4, 0xFFFFFFFF)
    assert bytes(vga.vram_bytes[4:8]) == b"\xff\x02\x03\x04"


def test_odd_even_text_writes_chars_to_plane0_attributes_to_plane1(card):
    vga, bus = card
    seq(bus, 4, 0x02)
    seq(bus, 2, 0x03)
    gfx(bus, 5, 0x10)
    gfx(bus, 6, 0x0E)                               # B8000, 32 KiB, odd/even chaining
    bus.mmio_write(0xB8000 + 2 * 81, 2, 0x1F41)     # 'A' on blue at row 1, column 1
    assert planar(vga, 81)[:2] == b"\x41\x1f"       # cell i at planar address i
    assert bus.mmio_read(0xB8000 + 2 * 81, 2) == 0x1F41
    assert bus.mmio_read(0xA0000, 1) == 0xFF        # outside the B8000 window


def test_write_mode0_set_reset_bit_mask_and_latches(card):
    vga, bus = card
    set_planar_mode(bus)
    vga.vram_bytes[40:44] = b"\xF0\x0F\xAA\x55"
    gfx(bus, 0, 0x05)                               # set/reset value: planes 0 and 2
    gfx(bus, 1, 0x0F)                               # ...for all planes
    gfx(bus, 8, 0x3C)                               # bit mask: middle four pixels
    bus.mmio_read(0xA000A, 1)                       # load the latches from address 10
    bus.mmio_write(0xA000A, 1, 0x00)                # data ignored: set/reset enabled everywhere
    assert planar(vga, 10) == bytes([0xFC, 0x03, 0xBE, 0x41])


def test_write_mode0_rotate_logical_op_and_map_mask(card):
    vga, bus = card
    set_planar_mode(bus)
    vga.vram_bytes[0:4] = b"\x0F\x0F\x0F\x0F"
    gfx(bus, 1, 0x00)
    gfx(bus, 8, 0xFF)
    gfx(bus, 3, 0x18 | 4)                           # XOR with the latches, rotate right by 4
    seq(bus, 2, 0x05)
    bus.mmio_read(0xA0000, 1)
    bus.mmio_write(0xA0000, 1, 0xF3)                # rotated: 0x3F
    assert planar(vga, 0) == bytes([0x30, 0x0F, 0x30, 0x0F])


def test_write_mode1_copies_latches(card):
    vga, bus = card
    set_planar_mode(bus)
    vga.vram_bytes[0:4] = b"\x11\x22\x33\x44"
    bus.mmio_read(0xA0000, 1)
    gfx(bus, 5, 0x01)
    bus.mmio_write(0xA0000 + 7, 1, 0)
    assert planar(vga, 7) == b"\x11\x22\x33\x44"


def test_write_mode2_colour_per_pixel_and_mode3_masked_by_data(card):
    vga, bus = card
    set_planar_mode(bus)
    gfx(bus, 5, 0x02)
    gfx(bus, 8, 0x81)
    bus.mmio_read(0xA0003, 1)
    bus.mmio_write(0xA0003, 1, 0x0A)                # colour 10 into the outer pixels
    assert planar(vga, 3) == bytes([0x00, 0x81, 0x00, 0x81])
    gfx(bus, 5, 0x03)
    gfx(bus, 0, 0x0C)
    gfx(bus, 8, 0xFF)
    bus.mmio_read(0xA0003, 1)
    bus.mmio_write(0xA0003, 1, 0x18)                # pixels 3 and 4 take set/reset colour 12
    assert planar(vga, 3) == bytes([0x00, 0x81, 0x18, 0x99])


def test_read_modes(card):
    vga, bus = card
    set_planar_mode(bus)
    vga.vram_bytes[8:12] = bytes([0b11000000, 0b10100000, 0b00000000, 0b11110000])
    gfx(bus, 4, 3)
    assert bus.mmio_read(0xA0002, 1) == 0b11110000  # read mode 0: the selected plane
    gfx(bus, 5, 0x08)                               # read mode 1: colour compare
    gfx(bus, 2, 0x0B)                               # colour 11 = planes 0, 1, 3
    gfx(bus, 7, 0x0F)
    assert bus.mmio_read(0xA0002, 1) == 0b10000000
    gfx(bus, 7, 0x01)                               # compare plane 0 only
    assert bus.mmio_read(0xA0002, 1) == 0b11000000


# -- PCI, ROM, state --------------------------------------------------------------------------------
def test_pci_function_reports_bar_placements():
    vga = StdVga(PrivateRegion(VRAM))
    lfb, mmio = [], []
    fn = vga.pci_function(on_lfb_change=lfb.append, on_mmio_change=mmio.append)
    root = PciRoot()
    root.add(fn, vga_pci.RECOMMENDED_SLOT)
    bus = Bus()
    bus.register(PciConfigIo(root), "pio", 0xCF8, 8, name="pci")

    def cfg(reg, value=None, size=4):
        bus.pio_write(0xCF8, 4, 0x80000000 | 2 << 11 | reg)
        if value is None:
            return bus.pio_read(0xCFC, size)
        bus.pio_write(0xCFC, size, value)

    assert cfg(0x00) == 0x11111234
    assert cfg(0x08) >> 8 == 0x030000
    cfg(0x10, 0xFFFFFFFF)
    assert cfg(0x10) == 0xFF000008                  # 16 MiB, prefetchable
    cfg(0x18, 0xFFFFFFFF)
    assert cfg(0x18) == 0xFFFFF000
    cfg(0x10, 0xFD000000)
    cfg(0x18, 0xFEBF0000)
    assert lfb == [] and mmio == []                 # memory decoding still off
    cfg(COMMAND, 0x0003, 2)
    assert lfb == [0xFD000000] and mmio == [0xFEBF0000]
    cfg(0x10, 0xE0000000)
    assert lfb[-1] == 0xE0000000 and fn.lfb_address == 0xE0000000
    cfg(COMMAND, 0x0000, 2)
    assert lfb[-1] is None and mmio[-1] is None
    state = fn.snapshot()
    fresh_lfb = []
    other = StdVga(PrivateRegion(VRAM)).pci_function(on_lfb_change=fresh_lfb.append)
    state_on = bytearray(state["config"])
    state_on[COMMAND] = 0x03
    other.restore({"config": bytes(state_on)})
    assert fresh_lfb == [0xE0000000]


def test_mmio_bar_reaches_dispi_and_vga_ports():
    vga = StdVga(PrivateRegion(VRAM))
    mmio = vga.pci_function().mmio
    mmio.write(0x500 + 2 * dispi.ID, 2, 0xB0C0)
    assert mmio.read(0x500 + 2 * dispi.ID, 2) == 0xB0C0
    assert mmio.read(0x500 + 2 * dispi.VIDEO_MEMORY_64K, 2) == VRAM >> 16
    mmio.write(0x404, 2, 0x0F02)                    # port 0x3C4: sequencer map mask
    assert vga.sr[2] == 0x0F


def test_mmio_bar_serves_an_edid_with_the_preferred_mode():
    mmio = StdVga(PrivateRegion(VRAM)).pci_function(edid=build_edid(1280, 800)).mmio
    edid = bytes(mmio.read(i, 1) for i in range(128))
    assert edid[:8] == b"\x00\xff\xff\xff\xff\xff\xff\x00" and sum(edid) % 256 == 0
    assert edid[18:20] == b"\x01\x04"                # EDID 1.4
    timing = edid[54:72]
    assert (timing[2] | (timing[4] >> 4) << 8, timing[5] | (timing[7] >> 4) << 8) == (1280, 800)
    assert b"Headbox\n" in edid[54:126]
    assert mmio.read(0x80, 4) == 0                   # past the block


def test_vgabios_is_debians_seavgabios_and_goes_into_fw_cfg():
    rom = vgabios.load_vgabios()
    assert rom[:2] == b"\x55\xaa" and len(rom) == rom[2] * 512
    config = FwCfg()
    assert vgabios.install_vgabios(config, rom) == "pci1234,1111.rom"
    assert config.file("pci1234,1111.rom") == rom


def test_missing_vgabios_is_one_clear_error(tmp_path):
    with pytest.raises(vgabios.VgaBiosError, match="install Debian's 'seabios' package"):
        vgabios.load_vgabios(str(tmp_path / "nope.bin"))


def test_snapshot_restore_registers_dac_dispi_and_latch(card):
    vga, bus = card
    set_vbe(bus, 800, 600, 16)
    bus.pio_write(0x3C8, 1, 9)
    for v in (1, 2, 3):
        bus.pio_write(0x3C9, 1, v)
    bus.pio_write(0x3D4, 2, 0x0E | 0x07 << 8)
    seq(bus, 3, 0x05)
    vga.window.latch = 0xCAFEF00D
    state = bus.snapshot()
    import msgpack
    state = msgpack.unpackb(msgpack.packb(state))

    other = StdVga(PrivateRegion(VRAM))
    bus2 = Bus()
    other.attach(bus2)
    bus2.restore(state)
    assert other.mode() == vga.mode()
    assert other.cr[0x0E] == 7 and other.sr[3] == 0x05
    assert bytes(other.dac.palette[27:30]) == b"\x01\x02\x03"
    assert other.window.latch == 0xCAFEF00D
    assert dispi_read(bus2, dispi.XRES) == 800
    with pytest.raises(ValueError):
        other.restore({**state["vga"], "cr": b"\0" * 3})
