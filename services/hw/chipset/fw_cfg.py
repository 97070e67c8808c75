"""QEMU's firmware configuration device (fw_cfg) on ports 0x510/0x511 with DMA at 0x514.

SeaBIOS learns the machine from it: RAM layout (etc/e820), CPU count, boot order, boot menu, extra
ROMs. Items are byte strings under 16-bit keys; named files get keys from 0x20 and a directory."""

from __future__ import annotations

import logging
import struct
import uuid as uuidlib
from typing import Protocol, Sequence

log = logging.getLogger("headbox.devices.fw_cfg")

BASE_PORT = 0x510        # +0 selector (16-bit), +1 data (8-bit), +4..+11 DMA address (64-bit BE)
PORT_COUNT = 12
SELECTOR_OFFSET, DATA_OFFSET, DMA_OFFSET = 0, 1, 4

SIGNATURE, ID, UUID, RAM_SIZE, NOGRAPHIC, NB_CPUS = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
BOOT_MENU, MAX_CPUS, FILE_DIR, FILE_FIRST = 0x0E, 0x0F, 0x19, 0x20
ARCH_LOCAL = 0x8000
IRQ0_OVERRIDE = ARCH_LOCAL + 2
WRITE_FLAG = 0x4000      # ignored by QEMU since 2.4: writes go through DMA only
KEY_MASK = 0xFFFF & ~WRITE_FLAG
MAX_FILES = 0x4000 - FILE_FIRST
FILE_NAME_LENGTH = 56

ID_TRADITIONAL, ID_DMA = 0x01, 0x02
DMA_SIGNATURE = b"QEMU CFG"
DMA_ERROR, DMA_READ, DMA_SKIP, DMA_SELECT, DMA_WRITE = 0x01, 0x02, 0x04, 0x08, 0x10
DMA_DESCRIPTOR = struct.Struct(">IIQ")        # control, length, address: all big-endian

E820_RAM, E820_RESERVED = 1, 2
E820_ENTRY = struct.Struct("<QQI")
# KVM's identity map and TSS pages (research/vmm.md §1.4) must never be given to the OS.
KVM_RESERVED = (0xFEFFC000, 0x4000, E820_RESERVED)

SHOW_BOOT_MENU_OFF, SHOW_BOOT_MENU_ALWAYS = 0, 1
BOOT_FAIL_WAIT_FOREVER = -1


class DmaMemory(Protocol):
    """What DMA needs of guest memory (services.hw.memory.GuestMemory fits)."""

    ram_size: int
    def read(self, gpa: int, size: int) -> bytes: ...
    def write(self, gpa: int, data: bytes) -> None: ...


class _Item:
    __slots__ = ("data", "writable", "name")

    def __init__(self, data: bytes, writable: bool, name: str | None):
        self.data = bytearray(data)
        self.writable = writable
        self.name = name


class FwCfg:
    """The item store and the selector/data/DMA register state.

    With `memory` the DMA interface is offered (ID bit 1) and descriptors are served from guest RAM;
    without it only the byte-at-a-time data port works."""

    def __init__(self, memory: DmaMemory | None = None):
        self.memory = memory
        self._items: dict[int, _Item] = {}
        self._files: dict[str, int] = {}
        self.selector = 0
        self.offset = 0
        self._dma_address = bytearray(8)
        self.set_item(SIGNATURE, b"QEMU")
        self.set_item(ID, struct.pack("<I", ID_TRADITIONAL | (ID_DMA if memory is not None else 0)))
        self._write_directory()

    # -- configuration -----------------------------------------------------------------------
    def set_item(self, key: int, data: bytes) -> None:
        """Set a numbered (legacy) item, e.g. NB_CPUS; named content belongs in add_file()."""
        if not 0 <= key <= 0xFFFF or (key & 0x3FFF) >= FILE_FIRST and not key & ARCH_LOCAL:
            raise ValueError(f"fw_cfg key {key:#x} is not a numbered item (files start at {FILE_FIRST:#x})")
        self._items[key & KEY_MASK] = _Item(data, False, None)

    def add_file(self, name: str, data: bytes, *, writable: bool = False) -> int:
        """Add a named file (e.g. 'vgaroms/vgabios-stdvga.bin'); returns its selector key.

        `writable` files may be written by the guest through DMA (size fixed)."""
        encoded = name.encode("ascii", "strict") if name.isascii() else b""
        if not encoded or len(encoded) >= FILE_NAME_LENGTH or b"\0" in encoded:
            raise ValueError(f"fw_cfg file name {name!r} must be 1-{FILE_NAME_LENGTH - 1} ASCII characters")
        if name in self._files:
            raise ValueError(f"fw_cfg already has a file named '{name}'")
        if len(self._files) >= MAX_FILES:
            raise ValueError(f"fw_cfg has no room for '{name}' ({MAX_FILES} files at most)")
        key = FILE_FIRST + len(self._files)
        self._items[key] = _Item(data, writable, name)
        self._files[name] = key
        self._write_directory()
        return key

    def file(self, name: str) -> bytes:
        try:
            return bytes(self._items[self._files[name]].data)
        except KeyError:
            raise KeyError(f"fw_cfg has no file named '{name}'") from None

    def file_names(self) -> list[str]:
        return sorted(self._files)

    def _write_directory(self) -> None:
        # Sorted by name like QEMU's, so the directory does not depend on the order files were added.
        entries = [struct.pack(">IHH56s", len(self._items[key].data), key, 0, name.encode("ascii"))
                   for name, key in sorted(self._files.items())]
        self._items[FILE_DIR] = _Item(struct.pack(">I", len(entries)) + b"".join(entries), False, None)

    # -- ports -------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == DATA_OFFSET:
            if size == 1:
                return self._read_byte()
            return int.from_bytes(self._read_bytes(size), "little")
        if DMA_OFFSET <= offset < DMA_OFFSET + 8:
            # Reading the DMA address register yields "QEMU CFG" (how a driver recognises DMA).
            part = DMA_SIGNATURE[offset - DMA_OFFSET:offset - DMA_OFFSET + size]
            return int.from_bytes(part.ljust(size, b"\xff"), "little")
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == SELECTOR_OFFSET:
            self.select(value & 0xFFFF)
        elif DMA_OFFSET <= offset < DMA_OFFSET + 8 and self.memory is not None:
            start = offset - DMA_OFFSET
            data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")[:8 - start]
            self._dma_address[start:start + len(data)] = data
            # Writing the low half (the register's last byte) starts the transfer.
            if start + len(data) == 8:
                address = int.from_bytes(self._dma_address, "big")
                self._dma_address[:] = bytes(8)
                self.dma(address)
        # Data-port writes were dropped by QEMU 2.4; firmware writes through DMA.

    def read_string(self, offset: int, size: int, count: int) -> bytes:
        if offset == DATA_OFFSET:
            return self._read_bytes(size * count)
        return b"".join(self.read(offset, size).to_bytes(size, "little") for _ in range(count))

    def select(self, key: int) -> None:
        self.selector = key & KEY_MASK
        self.offset = 0

    def _read_byte(self) -> int:
        item = self._items.get(self.selector)
        if item is None or self.offset >= len(item.data):
            return 0
        self.offset += 1
        return item.data[self.offset - 1]

    def _read_bytes(self, count: int) -> bytes:
        item = self._items.get(self.selector)
        data = b"" if item is None else bytes(item.data[self.offset:self.offset + count])
        self.offset += len(data)
        return data.ljust(count, b"\0")              # past the end an item reads as zeros

    # -- DMA ---------------------------------------------------------------------------------
    def dma(self, descriptor_address: int) -> None:
        """Run the transfer described at `descriptor_address` and write its status back."""
        memory = self.memory
        try:
            control, length, address = DMA_DESCRIPTOR.unpack(memory.read(descriptor_address, 16))
        except ValueError:
            log.debug("fw_cfg DMA descriptor at %#x is not in RAM", descriptor_address)
            return
        if control & DMA_SELECT:
            self.select(control >> 16)
        ok = True
        try:
            if control & DMA_READ:
                ok = self._dma_read(address, length)
            elif control & DMA_WRITE:
                ok = self._dma_write(address, length)
            elif control & DMA_SKIP:
                self._skip(length)
        except ValueError:
            ok = False                               # the buffer is not (all) guest RAM
        try:
            memory.write(descriptor_address, struct.pack(">I", 0 if ok else DMA_ERROR))
        except ValueError:
            pass

    def _dma_read(self, address: int, length: int) -> bool:
        if length > self.memory.ram_size:
            return False
        if length:
            self.memory.write(address, self._read_bytes(length))
        return True

    def _dma_write(self, address: int, length: int) -> bool:
        item = self._items.get(self.selector)
        if item is None or not item.writable or self.offset + length > len(item.data):
            return False
        item.data[self.offset:self.offset + length] = self.memory.read(address, length)
        self.offset += length
        return True

    def _skip(self, length: int) -> None:
        item = self._items.get(self.selector)
        self.offset = min(self.offset + length, len(item.data) if item is not None else 0)

    # -- lifecycle ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.selector = 0
        self.offset = 0
        self._dma_address[:] = bytes(8)

    def snapshot(self) -> dict:
        return {"selector": self.selector, "offset": self.offset, "dma_address": bytes(self._dma_address),
                "writable_files": {name: bytes(self._items[key].data) for name, key in self._files.items()
                                   if self._items[key].writable}}

    def restore(self, state: dict) -> None:
        for name, data in state["writable_files"].items():
            key = self._files.get(name)
            if key is None or not self._items[key].writable or len(data) != len(self._items[key].data):
                raise ValueError(f"fw_cfg state has writable file '{name}' that this VM does not match")
            self._items[key].data[:] = data
        self.selector = int(state["selector"]) & KEY_MASK
        self.offset = int(state["offset"])
        self._dma_address[:] = bytes(state["dma_address"])


def e820_table(memory) -> bytes:
    """The etc/e820 file: GuestMemory's map plus the pages KVM keeps for itself."""
    entries = sorted(list(memory.e820()) + [KVM_RESERVED])
    return b"".join(E820_ENTRY.pack(address, length, kind) for address, length, kind in entries)


def build_fw_cfg(memory, *, cpus: int = 1, max_cpus: int | None = None,
                 uuid: uuidlib.UUID | str | None = None, boot_menu: bool = False,
                 boot_paths: Sequence[str] = (), boot_fail_wait_ms: int = BOOT_FAIL_WAIT_FOREVER,
                 nographic: bool = False) -> FwCfg:
    """A FwCfg describing one VM as QEMU's `pc` machine would, for SeaBIOS.

    `memory` is the GuestMemory (sizes and e820, and the DMA target); `boot_paths` are OpenFirmware
    device paths (e.g. /pci@i0cf8/ide@1,1/drive@1/disk@0) that override the CMOS boot order."""
    max_cpus = cpus if max_cpus is None else max_cpus
    if not 1 <= cpus <= max_cpus <= 0xFFFF:
        raise ValueError(f"CPU count {cpus} must be between 1 and the maximum ({max_cpus})")
    try:
        vm_uuid = uuid if isinstance(uuid, uuidlib.UUID) else uuidlib.UUID(uuid) if uuid else uuidlib.UUID(int=0)
    except ValueError:
        raise ValueError(f"'{uuid}' is not a valid UUID") from None
    cfg = FwCfg(memory)
    cfg.set_item(UUID, vm_uuid.bytes)                  # RFC 4122 byte order, as QEMU passes it
    cfg.set_item(RAM_SIZE, struct.pack("<Q", memory.ram_size))
    cfg.set_item(NOGRAPHIC, struct.pack("<H", int(nographic)))
    cfg.set_item(NB_CPUS, struct.pack("<H", cpus))
    cfg.set_item(MAX_CPUS, struct.pack("<H", max_cpus))
    show_menu = SHOW_BOOT_MENU_ALWAYS if boot_menu else SHOW_BOOT_MENU_OFF
    cfg.set_item(BOOT_MENU, struct.pack("<H", show_menu))
    # Our interrupt routing sends ISA IRQ0 to IO-APIC pin 2, so the MADT needs that override.
    cfg.set_item(IRQ0_OVERRIDE, struct.pack("<I", 1))

    cfg.add_file("etc/e820", e820_table(memory))
    # One path per line, NUL-terminated like QEMU's; empty means "use the CMOS order".
    bootorder = "\n".join(boot_paths).encode("ascii") + b"\0" if boot_paths else b""
    cfg.add_file("bootorder", bootorder)
    cfg.add_file("etc/boot-fail-wait", struct.pack("<I", boot_fail_wait_ms & 0xFFFFFFFF))
    cfg.add_file("etc/show-boot-menu", struct.pack("<H", show_menu))
    cfg.add_file("etc/irq0-override", struct.pack("<I", 1))
    cfg.add_file("etc/max-cpus", struct.pack("<H", max_cpus))
    return cfg
