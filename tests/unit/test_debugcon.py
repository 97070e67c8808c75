"""Debug console: SeaBIOS's 0xE9 readback check and output to the sink."""

from services.hw.bus import Bus
from services.hw.chipset.debugcon import DebugConsole


def make():
    out = []
    bus = Bus()
    con = DebugConsole(out.append)
    bus.register(con, "pio", 0x402, 1, name="debugcon")
    bus.register(con, "pio", 0xE9, 1)
    return bus, out


def test_readback_is_0xe9_on_both_ports():
    bus, _ = make()
    # src/hw/serialio.c qemu_debug_preinit: the port is used only if inb(0x402) == 0xe9.
    assert bus.pio_read(0x402, 1) == 0xE9
    assert bus.pio_read(0xE9, 1) == 0xE9


def test_bytes_reach_the_sink():
    bus, out = make()
    for ch in b"SeaBIOS (version 1.16.2-debian-1.16.2-1)\n":
        bus.pio_write(0x402, 1, ch)
    bus.pio_write(0xE9, 1, ord("!"))
    assert b"".join(out) == b"SeaBIOS (version 1.16.2-debian-1.16.2-1)\n!"


def test_string_output_is_one_sink_call():
    bus, out = make()
    bus.pio_write_string(0x402, 1, b"Booting from Hard Disk...\n")
    assert out == [b"Booting from Hard Disk...\n"]


def test_word_write_sends_both_bytes_and_no_sink_is_fine():
    bus, out = make()
    bus.pio_write(0x402, 2, 0x0A41)
    assert out == [b"A\n"]
    silent = DebugConsole(None)
    silent.write(0, 1, 0x41)
    silent.write_string(0, 1, b"x")
    assert silent.snapshot() == {}
    silent.restore({})
