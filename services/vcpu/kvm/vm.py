"""The KVM VM fd: memory slots, in-kernel PIC/IO-APIC/PIT with QEMU's GSI routing, dirty log, clock.

Everything VM-wide; vCPU fds are created here but driven by vcpu.py."""

from __future__ import annotations

import ctypes
import os

from services.hw.memory import PAGE, MemorySlot
from services.vcpu.engine import EngineError
from services.vcpu.kvm import ioctl as k

# Research §1.4 step 2 (QEMU kvm_arch_init): one identity-map page, then three TSS pages, below 4 GiB
# and outside every slot; the firmware slot ends at 4 GiB and is at most 16 MiB, so this stays clear.
IDENTITY_MAP_ADDR = 0xFEFFC000
TSS_ADDR = 0xFEFFD000

PIC_CHIPS = (k.KVM_IRQCHIP_PIC_MASTER, k.KVM_IRQCHIP_PIC_SLAVE)
IRQCHIPS = {"pic_master": k.KVM_IRQCHIP_PIC_MASTER, "pic_slave": k.KVM_IRQCHIP_PIC_SLAVE,
            "ioapic": k.KVM_IRQCHIP_IOAPIC}
IOAPIC_PINS = 24


def qemu_gsi_routes() -> list[tuple[int, int, int]]:
    """(gsi, irqchip, pin) as QEMU's kvm_pc_setup_irq_routing installs them (research §1.6).

    GSI 2 (the cascade) has no route; the PIT's GSI 0 reaches IO-APIC pin 2. The platform must therefore
    tell SeaBIOS fw_cfg FW_CFG_IRQ0_OVERRIDE=1 so its MADT/MP table say "ISA IRQ0 -> GSI 2"; a
    mismatch leaves an APIC-mode guest without a timer. The device side owns that fw_cfg key."""
    routes = [(gsi, k.KVM_IRQCHIP_PIC_MASTER if gsi < 8 else k.KVM_IRQCHIP_PIC_SLAVE, gsi % 8)
              for gsi in range(16) if gsi != 2]
    routes += [(gsi, k.KVM_IRQCHIP_IOAPIC, 2 if gsi == 0 else gsi)
               for gsi in range(IOAPIC_PINS) if gsi != 2]
    return routes


class Vm:
    def __init__(self, system_fd: int):
        self.fd = k.ioctl(system_fd, k.KVM_CREATE_VM, 0)
        self.slots: list[tuple[MemorySlot, int]] = []   # (slot, flags), index = KVM slot number

    # -- platform --------------------------------------------------------------------------------
    def set_system_addresses(self) -> None:
        """Must come before the first vCPU (research §1.4 step 2)."""
        address = ctypes.c_uint64(IDENTITY_MAP_ADDR)
        k.ioctl(self.fd, k.KVM_SET_IDENTITY_MAP_ADDR, address)
        k.ioctl(self.fd, k.KVM_SET_TSS_ADDR, TSS_ADDR)   # by value, unsigned long (research §1.1)

    def create_irqchip_and_pit(self) -> None:
        k.ioctl(self.fd, k.KVM_CREATE_IRQCHIP)
        # SPEAKER_DUMMY: the kernel also answers port 0x61 (research §1.4 step 3).
        config = k.KvmPitConfig(flags=k.KVM_PIT_SPEAKER_DUMMY)
        k.ioctl(self.fd, k.KVM_CREATE_PIT2, config)
        self._set_gsi_routing(qemu_gsi_routes())

    def _set_gsi_routing(self, routes) -> None:
        table = k.irq_routing_type(len(routes))(nr=len(routes))
        for i, (gsi, chip, pin) in enumerate(routes):
            entry = table.entries[i]
            entry.gsi, entry.type = gsi, k.KVM_IRQ_ROUTING_IRQCHIP
            entry.u.irqchip.irqchip, entry.u.irqchip.pin = chip, pin
        k.ioctl(self.fd, k.KVM_SET_GSI_ROUTING, table)

    def irq_line(self, gsi: int, level: bool) -> None:
        line = k.KvmIrqLevel(irq=gsi, level=1 if level else 0)
        k.ioctl(self.fd, k.KVM_IRQ_LINE, line)

    # -- memory ----------------------------------------------------------------------------------
    def add_slot(self, slot: MemorySlot) -> None:
        flags = k.KVM_MEM_READONLY if slot.readonly else 0
        self.slots.append((slot, flags))
        self._set_region(len(self.slots) - 1)

    def _set_region(self, index: int) -> None:
        slot, flags = self.slots[index]
        region = k.KvmUserspaceMemoryRegion(slot=index, flags=flags, guest_phys_addr=slot.gpa,
                                            memory_size=slot.size, userspace_addr=slot.host_address)
        try:
            k.ioctl(self.fd, k.KVM_SET_USER_MEMORY_REGION, region)
        except OSError as e:
            raise EngineError(f"KVM refused memory slot '{slot.name}' at {slot.gpa:#x}+{slot.size:#x}: "
                              f"{e.strerror}") from None

    def readonly_slot_at(self, gpa: int) -> MemorySlot | None:
        for slot, flags in self.slots:
            if flags & k.KVM_MEM_READONLY and slot.gpa <= gpa < slot.end:
                return slot
        return None

    def enable_dirty_log(self, region) -> None:
        """Re-issue every slot backed by `region` with LOG_DIRTY_PAGES, same geometry (research §1.8)."""
        for index, (slot, flags) in enumerate(self.slots):
            if slot.region is region and not flags & k.KVM_MEM_LOG_DIRTY_PAGES:
                self.slots[index] = (slot, flags | k.KVM_MEM_LOG_DIRTY_PAGES)
                self._set_region(index)

    def dirty_log(self, index: int) -> bytes:
        """KVM_GET_DIRTY_LOG: one bit per page, in 64-bit words; fetching clears it (research §1.2)."""
        slot, _ = self.slots[index]
        words = (slot.size // PAGE + 63) // 64
        bitmap = (ctypes.c_uint64 * words)()
        log = k.KvmDirtyLog(slot=index, dirty_bitmap=ctypes.addressof(bitmap))
        k.ioctl(self.fd, k.KVM_GET_DIRTY_LOG, log)
        return bytes(bitmap)

    # -- interrupt controllers, PIT, clock state ---------------------------------------------------
    def get_irqchip(self, chip_id: int) -> bytes:
        chip = k.KvmIrqchip(chip_id=chip_id)
        k.ioctl(self.fd, k.KVM_GET_IRQCHIP, chip)
        return bytes(chip)

    def set_irqchip(self, data: bytes) -> None:
        chip = k.KvmIrqchip.from_buffer_copy(data)
        k.ioctl(self.fd, k.KVM_SET_IRQCHIP, chip)

    def get_pit(self) -> bytes:
        pit = k.KvmPitState2()
        k.ioctl(self.fd, k.KVM_GET_PIT2, pit)
        return bytes(pit)

    def set_pit(self, data: bytes) -> None:
        pit = k.KvmPitState2.from_buffer_copy(data)
        k.ioctl(self.fd, k.KVM_SET_PIT2, pit)

    def get_clock(self) -> int:
        clock = k.KvmClockData()
        k.ioctl(self.fd, k.KVM_GET_CLOCK, clock)
        return clock.clock

    def set_clock(self, ns: int) -> None:
        # flags 0: the guest's kvmclock continues from the saved value, without advancing by the time
        # the VM spent stopped (KVM_CLOCK_REALTIME would do that; teleporting may want it later).
        clock = k.KvmClockData(clock=ns)
        k.ioctl(self.fd, k.KVM_SET_CLOCK, clock)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
