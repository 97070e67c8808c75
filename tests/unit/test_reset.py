"""Reset lines: port 0x92 (A20, fast reset) and PIIX 0xCF9 (reset control) beside PCI's 0xCF8."""

import msgpack

from services.hw.bus import Bus
from services.hw.chipset.pci import I440fxHostBridge, PciConfigIo, PciRoot
from services.hw.chipset.reset import ResetControl, SystemControlPortA
from services.hw.memory import GuestMemory, MiB
from services.ipc.shm import PrivateRegion
from services.vcpu.platform import build_platform


def test_port92_a20_reads_back_and_fast_reset_never_shows():
    resets, a20 = [], []
    port = SystemControlPortA(lambda: resets.append(1), a20.append)
    bus = Bus()
    bus.register(port, "pio", 0x92, 1)
    # SeaBIOS set_a20: v = inb(0x92); v |= 0x02; outb(v, 0x92)
    bus.pio_write(0x92, 1, bus.pio_read(0x92, 1) | 0x02)
    assert bus.pio_read(0x92, 1) == 0x02 and port.a20 and a20 == [True] and resets == []
    bus.pio_write(0x92, 1, 0x03)                       # fast reset
    assert resets == [1]
    assert bus.pio_read(0x92, 1) & 0x01 == 0
    bus.pio_write(0x92, 1, 0x00)
    assert a20 == [True, False]
    assert port.snapshot() == {"value": 0}
    port.restore({"value": 0x03})
    assert port.read(0, 1) == 0x02


def test_cf9_reset_control_as_seabios_uses_it():
    resets = []
    rc = ResetControl(lambda: resets.append(1))
    # src/resume.c tryReboot: outb(0x02, 0xcf9); udelay(50); outb(0x06, 0xcf9)
    rc.write(0, 1, 0x02)
    assert resets == [] and rc.read(0, 1) == 0x02
    rc.write(0, 1, 0x06)
    assert resets == [1]
    rc.write(0, 1, 0x0E)                               # full reset
    assert resets == [1, 1]
    assert rc.read(0, 1) == 0x0A
    rc.reset()
    assert rc.snapshot() == {"value": 0}


def test_cf9_byte_and_cf8_dword_coexist_on_one_bus():
    resets = []
    root = PciRoot()
    root.add(I440fxHostBridge(), 0)
    bus = Bus()
    bus.register(PciConfigIo(root), "pio", 0xCF8, 8)
    bus.register(ResetControl(lambda: resets.append(1)), "pio", 0xCF9, 1, overlay=True)
    bus.pio_write(0xCF8, 4, 0x80000000)
    assert bus.pio_read(0xCF8, 4) == 0x80000000 and resets == []
    assert bus.pio_read(0xCFC, 4) == 0x12378086
    bus.pio_write(0xCF9, 1, 0x06)
    assert resets == [1]
    assert bus.pio_read(0xCF8, 4) == 0x80000000       # the PCI address register was not touched
    assert bus.pio_read(0xCFE, 2) == 0x1237


def test_platform_builder_wires_everything():
    log, resets, offs = [], [], []
    memory = GuestMemory(PrivateRegion(32 * MiB), b"\0" * (128 << 10))
    bus = build_platform(memory, cpus=2, boot_order=("disk",), debug_sink=log.append,
                         reset=lambda: resets.append(1), poweroff=lambda: offs.append(1), exit_port=0xF4)
    assert set(bus.devices()) == {"debugcon", "cmos", "fw_cfg", "pci", "reset-control", "port92",
                                  "debug-exit", "i8042", "i8042-command"}
    assert bus.pio_read(0x402, 1) == 0xE9
    bus.pio_write(0xE9, 1, ord("x"))
    assert log == [b"x"]
    bus.pio_write(0x70, 1, 0x80 | 0x5F)
    assert bus.pio_read(0x71, 1) == 1
    bus.pio_write(0x70, 1, 0x3D)
    assert bus.pio_read(0x71, 1) == 0x02
    bus.pio_write(0x510, 2, 0x0005)
    assert bus.pio_read(0x511, 1) == 2
    bus.pio_write(0xCF8, 4, 0x80000000)
    assert bus.pio_read(0xCFC, 4) == 0x12378086
    bus.pio_write(0xCF9, 1, 0x06)
    bus.pio_write(0x92, 1, 0x01)
    assert resets == [1, 1]
    bus.pio_write(0xF4, 1, 0x2A)
    assert offs == [1] and bus.device("debug-exit").exit_code == 0x2A
    state = msgpack.unpackb(msgpack.packb(bus.snapshot()))     # plain data, as teleporting sends it
    bus.reset()
    bus.restore(state)
    assert bus.pio_read(0xCF8, 4) == 0x80000000
