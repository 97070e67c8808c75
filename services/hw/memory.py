"""Guest-physical memory layout of a PC: RAM in one shared region, firmware ROM, MMIO holes.

Both accelerators map exactly the slots listed here; every address outside them is MMIO and goes to
the interrupt controllers (LAPIC, IO-APIC) or to the device bus."""

from __future__ import annotations

from dataclasses import dataclass

from services.ipc.shm import PrivateRegion, SharedRegion

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PAGE = 4096

VGA_WINDOW = (0xA0000, 0x20000)
SHADOW_START, SHADOW_END = 0xC0000, 0x100000   # option ROMs and BIOS below 1 MiB (PAM-controlled)
ISA_BIOS_SIZE = 128 * KiB                      # the BIOS's last 128 KiB appear below 1 MiB
LOWMEM_LIMIT = 0xE0000000                      # RAM above this goes above 4 GiB (QEMU's pc layout)
IOAPIC_BASE = 0xFEC00000
LAPIC_BASE = 0xFEE00000
FOUR_GIB = 1 << 32


@dataclass(frozen=True)
class MemorySlot:
    name: str
    gpa: int
    size: int
    region: SharedRegion | PrivateRegion
    offset: int = 0
    readonly: bool = False

    @property
    def host_address(self) -> int:
        return self.region.address + self.offset

    @property
    def end(self) -> int:
        return self.gpa + self.size


class GuestRam:
    """Guest RAM as every process sees it: one region, laid out as QEMU's `pc` machine lays it
    out (the part above LOWMEM_LIMIT appears above 4 GiB)."""

    def __init__(self, ram: SharedRegion | PrivateRegion):
        if ram.size < 2 * MiB or ram.size % MiB:
            raise ValueError("guest RAM must be a whole number of MiB, at least 2")
        self.ram = ram
        self.ram_size = ram.size
        self.lowmem_end = min(self.ram_size, LOWMEM_LIMIT)
        self.highmem_size = self.ram_size - self.lowmem_end

    def ram_offset(self, gpa: int) -> int | None:
        """Offset into the RAM region of a guest-physical address, or None for a hole."""
        if gpa < VGA_WINDOW[0] or SHADOW_START <= gpa < self.lowmem_end:
            return gpa
        if FOUR_GIB <= gpa < FOUR_GIB + self.highmem_size:
            return gpa - FOUR_GIB + self.lowmem_end
        return None

    def read(self, gpa: int, size: int) -> bytes:
        off = self.ram_offset(gpa)
        if off is None or self.ram_offset(gpa + size - 1) != off + size - 1:
            raise ValueError(f"guest-physical range {gpa:#x}+{size:#x} is not plain RAM")
        return bytes(self.ram.buf[off:off + size])

    def write(self, gpa: int, data: bytes) -> None:
        off = self.ram_offset(gpa)
        if off is None or self.ram_offset(gpa + len(data) - 1) != off + len(data) - 1:
            raise ValueError(f"guest-physical range {gpa:#x}+{len(data):#x} is not plain RAM")
        self.ram.buf[off:off + len(data)] = data

    def e820(self) -> list[tuple[int, int, int]]:
        """(address, length, type) with 1 = RAM, 2 = reserved, as the firmware hands it to the OS."""
        table = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (SHADOW_END, self.lowmem_end - SHADOW_END, 1)]
        if self.highmem_size:
            table.append((FOUR_GIB, self.highmem_size, 1))
        return table


class GuestMemory(GuestRam):
    """The RAM region plus the firmware image: what the vCPU process maps."""

    def __init__(self, ram: SharedRegion | PrivateRegion, bios: bytes):
        if len(bios) % (64 * KiB) or not bios:
            raise ValueError("the firmware image must be a non-empty multiple of 64 KiB")
        super().__init__(ram)
        self.bios = bytes(bios)
        self.bios_rom = PrivateRegion(len(bios), bios)

    def slots(self) -> list[MemorySlot]:
        slots = [
            MemorySlot("ram-below-vga", 0, VGA_WINDOW[0], self.ram, 0),
            MemorySlot("shadow", SHADOW_START, SHADOW_END - SHADOW_START, self.ram, SHADOW_START),
            MemorySlot("ram", SHADOW_END, self.lowmem_end - SHADOW_END, self.ram, SHADOW_END),
            MemorySlot("bios", FOUR_GIB - len(self.bios), len(self.bios), self.bios_rom, 0, True),
        ]
        if self.highmem_size:
            slots.append(MemorySlot("ram-above-4g", FOUR_GIB, self.highmem_size, self.ram, self.lowmem_end))
        return slots

    def load_firmware_shadow(self) -> None:
        """Copy the BIOS's last 128 KiB into the shadow area, as a reset leaves it."""
        tail = self.bios[-ISA_BIOS_SIZE:]
        start = SHADOW_END - len(tail)
        self.ram.buf[start:SHADOW_END] = tail
