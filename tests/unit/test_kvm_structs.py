"""The KVM ABI layer against research/vmm.md §1.1-§1.2: structure sizes, field offsets, ioctl numbers.

These need no /dev/kvm: they pin services/vcpu/kvm/ioctl.py to the numbers computed from the uapi headers."""

import ctypes

import pytest

from services.vcpu.kvm import ioctl as k
from services.vcpu.kvm.vm import qemu_gsi_routes

SIZES = {
    k.KvmUserspaceMemoryRegion: 32, k.KvmRun: 2352, k.KvmRegs: 144, k.KvmSegment: 24, k.KvmSregs: 312,
    k.KvmFpu: 416, k.KvmXsave: 4096, k.KvmXcrs: 392, k.KvmDebugregs: 128, k.KvmLapicState: 1024,
    k.KvmVcpuEvents: 64, k.KvmCpuidEntry2: 40, k.KvmMsrEntry: 16, k.KvmIrqchip: 520, k.KvmPicState: 16,
    k.KvmIoapicState: 216, k.KvmPitChannelState: 24, k.KvmPitState2: 112, k.KvmPitConfig: 64,
    k.KvmClockData: 48, k.KvmIrqRoutingEntry: 48, k.KvmDirtyLog: 16, k.KvmIrqLevel: 8,
}

# (structure, field, offset) from research §1.2.
OFFSETS = [
    (k.KvmRun, "immediate_exit", 1), (k.KvmRun, "exit_reason", 8), (k.KvmRun, "cr8", 16),
    (k.KvmRun, "apic_base", 24), (k.KvmRun, "exit", 32), (k.KvmRun, "kvm_valid_regs", 288),
    (k.KvmRun, "kvm_dirty_regs", 296), (k.KvmRun, "sync_regs", 304),
    (k.KvmSregs, "gdt", 192), (k.KvmSregs, "idt", 208), (k.KvmSregs, "cr0", 224), (k.KvmSregs, "efer", 264),
    (k.KvmSregs, "apic_base", 272), (k.KvmSregs, "interrupt_bitmap", 280),
    (k.KvmSegment, "selector", 12), (k.KvmSegment, "unusable", 22),
    (k.KvmFpu, "fcw", 128), (k.KvmFpu, "last_ip", 136), (k.KvmFpu, "xmm", 152), (k.KvmFpu, "mxcsr", 408),
    (k.KvmVcpuEvents, "interrupt_injected", 8), (k.KvmVcpuEvents, "nmi_injected", 12),
    (k.KvmVcpuEvents, "sipi_vector", 16), (k.KvmVcpuEvents, "flags", 20), (k.KvmVcpuEvents, "smi_smm", 24),
    (k.KvmVcpuEvents, "exception_has_payload", 55), (k.KvmVcpuEvents, "exception_payload", 56),
    (k.KvmIrqchip, "chip", 8), (k.KvmPitState2, "flags", 72), (k.KvmPitChannelState, "count_load_time", 16),
    (k.KvmClockData, "realtime", 16), (k.KvmClockData, "host_tsc", 24), (k.KvmIrqRoutingEntry, "u", 16),
    (k.KvmDirtyLog, "dirty_bitmap", 8), (k.KvmUserspaceMemoryRegion, "userspace_addr", 24),
]

# (exit union member, field, offset within kvm_run) from research §1.2.
EXIT_OFFSETS = [
    (k.KvmRunIo, "direction", 32), (k.KvmRunIo, "size", 33), (k.KvmRunIo, "port", 34),
    (k.KvmRunIo, "count", 36), (k.KvmRunIo, "data_offset", 40),
    (k.KvmRunMmio, "phys_addr", 32), (k.KvmRunMmio, "data", 40), (k.KvmRunMmio, "len", 48),
    (k.KvmRunMmio, "is_write", 52), (k.KvmRunInternal, "suberror", 32), (k.KvmRunInternal, "data", 40),
    (k.KvmRunFailEntry, "cpu", 40), (k.KvmRunSystemEvent, "ndata", 36),
]

IOCTLS = {
    "KVM_GET_API_VERSION": 0xAE00, "KVM_CREATE_VM": 0xAE01, "KVM_CHECK_EXTENSION": 0xAE03,
    "KVM_GET_VCPU_MMAP_SIZE": 0xAE04, "KVM_GET_SUPPORTED_CPUID": 0xC008AE05,
    "KVM_GET_MSR_INDEX_LIST": 0xC004AE02, "KVM_SET_USER_MEMORY_REGION": 0x4020AE46,
    "KVM_SET_TSS_ADDR": 0xAE47, "KVM_SET_IDENTITY_MAP_ADDR": 0x4008AE48, "KVM_CREATE_IRQCHIP": 0xAE60,
    "KVM_IRQ_LINE": 0x4008AE61, "KVM_GET_IRQCHIP": 0xC208AE62, "KVM_SET_IRQCHIP": 0x8208AE63,
    "KVM_CREATE_PIT2": 0x4040AE77, "KVM_GET_PIT2": 0x8070AE9F, "KVM_SET_PIT2": 0x4070AEA0,
    "KVM_GET_CLOCK": 0x8030AE7C, "KVM_SET_CLOCK": 0x4030AE7B, "KVM_SET_GSI_ROUTING": 0x4008AE6A,
    "KVM_GET_DIRTY_LOG": 0x4010AE42, "KVM_CREATE_VCPU": 0xAE41, "KVM_RUN": 0xAE80,
    "KVM_GET_REGS": 0x8090AE81, "KVM_SET_REGS": 0x4090AE82, "KVM_GET_SREGS": 0x8138AE83,
    "KVM_SET_SREGS": 0x4138AE84, "KVM_GET_FPU": 0x81A0AE8C, "KVM_SET_FPU": 0x41A0AE8D,
    "KVM_GET_XSAVE": 0x9000AEA4, "KVM_SET_XSAVE": 0x5000AEA5, "KVM_GET_XSAVE2": 0x9000AECF,
    "KVM_GET_XCRS": 0x8188AEA6, "KVM_SET_XCRS": 0x4188AEA7, "KVM_GET_MSRS": 0xC008AE88,
    "KVM_SET_MSRS": 0x4008AE89, "KVM_GET_LAPIC": 0x8400AE8E, "KVM_SET_LAPIC": 0x4400AE8F,
    "KVM_GET_VCPU_EVENTS": 0x8040AE9F, "KVM_SET_VCPU_EVENTS": 0x4040AEA0,
    "KVM_GET_MP_STATE": 0x8004AE98, "KVM_SET_MP_STATE": 0x4004AE99, "KVM_GET_DEBUGREGS": 0x8080AEA1,
    "KVM_SET_DEBUGREGS": 0x4080AEA2, "KVM_SET_CPUID2": 0x4008AE90, "KVM_GET_CPUID2": 0xC008AE91,
    "KVM_GET_TSC_KHZ": 0xAEA3, "KVM_SET_TSC_KHZ": 0xAEA2, "KVM_KVMCLOCK_CTRL": 0xAEAD,
}


@pytest.mark.parametrize("struct,size", SIZES.items(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_struct_size(struct, size):
    assert ctypes.sizeof(struct) == size


@pytest.mark.parametrize("struct,field,offset", OFFSETS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_field_offset(struct, field, offset):
    assert getattr(struct, field).offset == offset


@pytest.mark.parametrize("member,field,offset", EXIT_OFFSETS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_exit_field_offset(member, field, offset):
    assert k.KvmRun.exit.offset + getattr(member, field).offset == offset


@pytest.mark.parametrize("name,number", IOCTLS.items())
def test_ioctl_number(name, number):
    assert getattr(k, name) == number, f"{name} = {getattr(k, name):#x}, research says {number:#x}"


def test_variable_length_headers():
    assert ctypes.sizeof(k.cpuid2_type(3)) == 8 + 3 * 40
    assert ctypes.sizeof(k.msrs_type(2)) == 8 + 2 * 16
    assert ctypes.sizeof(k.irq_routing_type(5)) == 8 + 5 * 48
    assert ctypes.sizeof(k.msr_list_type(4)) == 4 + 4 * 4


def test_gsi_routing_is_qemus():
    """Research §1.6: PIC routes for GSI 0,1,3-15; IO-APIC GSI 0 -> pin 2, 1 and 3-23 -> pin n."""
    routes = qemu_gsi_routes()
    pic = {gsi: (chip, pin) for gsi, chip, pin in routes if chip != k.KVM_IRQCHIP_IOAPIC}
    ioapic = {gsi: pin for gsi, chip, pin in routes if chip == k.KVM_IRQCHIP_IOAPIC}
    assert sorted(pic) == [0, 1] + list(range(3, 16))
    assert pic[1] == (k.KVM_IRQCHIP_PIC_MASTER, 1) and pic[9] == (k.KVM_IRQCHIP_PIC_SLAVE, 1)
    assert ioapic == {0: 2, 1: 1, **{gsi: gsi for gsi in range(3, 24)}}
