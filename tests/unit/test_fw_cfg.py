"""fw_cfg: the port protocol and the DMA interface as SeaBIOS 1.16.2 drives them (src/fw/paravirt.c)."""

import struct
import uuid

import pytest

from services.hw.bus import Bus
from services.hw.chipset.fw_cfg import FwCfg, build_fw_cfg
from services.hw.memory import GuestMemory, MiB
from services.ipc.shm import PrivateRegion

BIOS = b"\xf4" * (64 * 1024)
DESCRIPTOR, BUFFER = 0x7000, 0x8000


def bswap32(value):
    return int.from_bytes(value.to_bytes(4, "big"), "little")


@pytest.fixture
def vm():
    memory = GuestMemory(PrivateRegion(64 * MiB), BIOS)
    cfg = build_fw_cfg(memory, cpus=2, uuid="12345678-9abc-def0-1122-334455667788",
                       boot_paths=["/pci@i0cf8/ide@1,1/drive@1/disk@0", "HALT"])
    bus = Bus()
    bus.register(cfg, "pio", 0x510, 12, name="fw_cfg")
    return bus, cfg, memory


def read_port(bus, key, length):
    bus.pio_write(0x510, 2, key)                  # outw(key, PORT_QEMU_CFG_CTL)
    return bytes(bus.pio_read(0x511, 1) for _ in range(length))


def dma(bus, memory, control, length, address=BUFFER):
    memory.write(DESCRIPTOR, struct.pack(">IIQ", control, length, address))
    bus.pio_write(0x518, 4, bswap32(DESCRIPTOR))  # outl(cpu_to_be32(&access), 0x518)
    return struct.unpack(">I", memory.read(DESCRIPTOR, 4))[0]


def directory(bus):
    count = struct.unpack(">I", read_port(bus, 0x19, 4))[0]
    entries = {}
    for _ in range(count):
        size, select, reserved, name = struct.unpack(">IHH56s", bytes(bus.pio_read(0x511, 1) for _ in range(64)))
        assert reserved == 0
        entries[name.rstrip(b"\0").decode()] = (select, size)
    return entries


def test_signature_and_id(vm):
    bus, _, _ = vm
    assert read_port(bus, 0x0000, 4) == b"QEMU"
    assert struct.unpack("<I", read_port(bus, 0x0001, 4))[0] == 0x3       # traditional + DMA
    plain = Bus()
    plain.register(FwCfg(None), "pio", 0x510, 12, name="fw_cfg")
    assert struct.unpack("<I", read_port(plain, 0x0001, 4))[0] == 0x1     # no memory, no DMA


def test_dma_register_reads_the_signature(vm):
    bus, _, _ = vm
    assert bus.pio_read(0x514, 4).to_bytes(4, "little") == b"QEMU"
    assert bus.pio_read(0x518, 4).to_bytes(4, "little") == b" CFG"


def test_file_dir_is_big_endian_and_sorted(vm):
    bus, cfg, _ = vm
    raw = read_port(bus, 0x19, 4 + 64)
    count = struct.unpack(">I", raw[:4])[0]
    assert count == 6 and raw[:4] == b"\x00\x00\x00\x06"
    entries = directory(bus)
    assert list(entries) == sorted(entries)
    assert set(entries) == {"bootorder", "etc/boot-fail-wait", "etc/e820", "etc/irq0-override",
                            "etc/max-cpus", "etc/show-boot-menu"}
    assert all(select >= 0x20 for select, _ in entries.values())
    assert entries["etc/e820"][1] == 4 * 20
    assert raw[4:8] == struct.pack(">I", entries["bootorder"][1])            # the first entry is 'bootorder'


def test_e820_entries_read_through_the_ports(vm):
    bus, _, _ = vm
    select, size = directory(bus)["etc/e820"]
    bus.pio_write(0x510, 2, select)
    table = [struct.unpack("<QQI", bytes(bus.pio_read(0x511, 1) for _ in range(20))) for _ in range(size // 20)]
    assert table == [
        (0x0, 0x9FC00, 1),
        (0x9FC00, 0x400, 2),
        (0x100000, 63 * MiB, 1),
        (0xFEFFC000, 0x4000, 2),          # KVM's identity map + TSS
    ]
    assert bus.pio_read(0x511, 1) == 0    # past the end reads zero


def test_legacy_numbered_items(vm):
    bus, _, _ = vm
    assert struct.unpack("<H", read_port(bus, 0x05, 2))[0] == 2            # NB_CPUS
    assert struct.unpack("<H", read_port(bus, 0x0F, 2))[0] == 2            # MAX_CPUS
    assert struct.unpack("<Q", read_port(bus, 0x03, 8))[0] == 64 * MiB     # RAM_SIZE
    assert struct.unpack("<H", read_port(bus, 0x0E, 2))[0] == 0            # BOOT_MENU
    assert struct.unpack("<H", read_port(bus, 0x04, 2))[0] == 0            # NOGRAPHIC
    assert read_port(bus, 0x02, 16) == uuid.UUID("12345678-9abc-def0-1122-334455667788").bytes
    assert read_port(bus, 0x8002, 1) == b"\x01"                            # IRQ0_OVERRIDE
    assert read_port(bus, 0x0D, 8) == bytes(8)                             # absent NUMA: zeros
    assert read_port(bus, 0x8000, 2) == bytes(2)                           # no legacy ACPI tables


def test_named_integer_files(vm):
    _, cfg, _ = vm
    assert cfg.file("etc/boot-fail-wait") == b"\xff\xff\xff\xff"           # -1: never reboot
    assert cfg.file("etc/show-boot-menu") == b"\x00\x00"
    assert cfg.file("etc/irq0-override") == b"\x01\x00\x00\x00"
    assert cfg.file("etc/max-cpus") == b"\x02\x00"
    assert cfg.file("bootorder") == b"/pci@i0cf8/ide@1,1/drive@1/disk@0\nHALT\0"


def test_dma_read_with_select(vm):
    bus, cfg, memory = vm
    # qemu_cfg_read_entry(&id, QEMU_CFG_ID, 4) with DMA
    assert dma(bus, memory, 0x0001 << 16 | 0x08 | 0x02, 4) == 0
    assert memory.read(BUFFER, 4) == b"\x03\x00\x00\x00"
    # qemu_early_e820: FILE_DIR count by DMA, then entries by further DMA reads without select
    assert dma(bus, memory, 0x0019 << 16 | 0x08 | 0x02, 4) == 0
    count = struct.unpack(">I", memory.read(BUFFER, 4))[0]
    names = []
    for _ in range(count):
        assert dma(bus, memory, 0x02, 64) == 0
        names.append(memory.read(BUFFER + 8, 56).rstrip(b"\0").decode())
    assert names == cfg.file_names()


def test_dma_e820_into_guest_memory(vm):
    bus, cfg, memory = vm
    select = directory(bus)["etc/e820"][0]
    assert dma(bus, memory, select << 16 | 0x08 | 0x02, 80) == 0
    assert memory.read(BUFFER, 80) == cfg.file("etc/e820")
    assert struct.unpack("<QQI", memory.read(BUFFER + 40, 20)) == (0x100000, 63 * MiB, 1)


def test_dma_skip_then_read_and_past_end_zeros(vm):
    bus, _, memory = vm
    bus.pio_write(0x510, 2, 0x0000)
    assert dma(bus, memory, 0x04, 2) == 0                 # skip "QE"
    memory.write(BUFFER, b"\xaa" * 8)
    assert dma(bus, memory, 0x02, 8) == 0
    assert memory.read(BUFFER, 8) == b"MU\0\0\0\0\0\0"


def test_dma_address_in_two_halves_and_reset_after_use(vm):
    bus, cfg, memory = vm
    memory.write(DESCRIPTOR, struct.pack(">IIQ", 0x0000 << 16 | 0x0A, 4, BUFFER))
    bus.pio_write(0x514, 4, 0)                            # high half first: nothing happens yet
    assert memory.read(DESCRIPTOR, 4) != b"\0\0\0\0"
    bus.pio_write(0x518, 4, bswap32(DESCRIPTOR))
    assert memory.read(BUFFER, 4) == b"QEMU" and memory.read(DESCRIPTOR, 4) == b"\0\0\0\0"
    assert cfg.snapshot()["dma_address"] == bytes(8)


def test_dma_write_rules(vm):
    bus, cfg, memory = vm
    key = cfg.add_file("etc/tpm/log", b"\0" * 8, writable=True)
    memory.write(BUFFER, b"ABCDEFGH")
    assert dma(bus, memory, key << 16 | 0x08 | 0x10, 4) == 0
    assert dma(bus, memory, 0x10, 4, BUFFER + 4) == 0
    assert cfg.file("etc/tpm/log") == b"ABCDEFGH"
    assert dma(bus, memory, key << 16 | 0x08 | 0x10, 9) == 0x01          # cannot grow an item
    assert dma(bus, memory, 0x0000 << 16 | 0x08 | 0x10, 4) == 0x01       # read-only item
    assert read_port(bus, 0x0000, 4) == b"QEMU"


def test_dma_outside_ram_sets_the_error_bit(vm):
    bus, _, memory = vm
    assert dma(bus, memory, 0x0000 << 16 | 0x08 | 0x02, 4, 0xA0000) == 0x01    # VGA hole
    assert dma(bus, memory, 0x02, 0xFFFFFFFF) == 0x01
    bus.pio_write(0x518, 4, bswap32(0xFEC00000))          # a descriptor in MMIO is ignored


def test_add_file_for_vga_rom_and_errors(vm):
    bus, cfg, _ = vm
    rom = b"\x55\xaa" + b"\0" * 510
    key = cfg.add_file("vgaroms/vgabios-stdvga.bin", rom)
    assert directory(bus)["vgaroms/vgabios-stdvga.bin"] == (key, 512)
    assert read_port(bus, key, 2) == b"\x55\xaa"
    with pytest.raises(ValueError, match="already has a file named 'etc/e820'"):
        cfg.add_file("etc/e820", b"")
    with pytest.raises(ValueError, match="1-55 ASCII characters"):
        cfg.add_file("x" * 56, b"")
    with pytest.raises(ValueError, match="not a numbered item"):
        cfg.set_item(0x20, b"")


def test_builder_rejects_bad_configuration():
    memory = GuestMemory(PrivateRegion(4 * MiB), BIOS)
    with pytest.raises(ValueError, match="not a valid UUID"):
        build_fw_cfg(memory, uuid="not-a-uuid")
    with pytest.raises(ValueError, match="CPU count 4"):
        build_fw_cfg(memory, cpus=4, max_cpus=2)
    cfg = build_fw_cfg(memory, boot_menu=True)
    assert cfg.file("etc/show-boot-menu") == b"\x01\x00" and cfg.file("bootorder") == b""


def test_snapshot_keeps_the_read_position(vm):
    bus, cfg, memory = vm
    bus.pio_write(0x510, 2, 0x0000)
    bus.pio_read(0x511, 1)
    state = cfg.snapshot()
    other = build_fw_cfg(memory, cpus=2)
    other.restore(state)
    assert bytes(other.read(1, 1) for _ in range(3)) == b"EMU"
    cfg.reset()
    assert cfg.selector == 0 and cfg.offset == 0


def test_data_port_string_read(vm):
    bus, _, _ = vm
    bus.pio_write(0x510, 2, 0x0000)
    assert bus.pio_read_string(0x511, 1, 6) == b"QEMU\0\0"   # insb
