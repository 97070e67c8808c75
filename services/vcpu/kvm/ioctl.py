"""The KVM kernel ABI for x86-64: ioctl numbers, constants and ctypes structures, and the call itself.

Numbers and layouts follow research/vmm.md §1.1-§1.2 (the uapi headers); tests/unit/test_kvm_structs.py
pins every size and number against that table."""

from __future__ import annotations

import ctypes
import os

u8, u16, u32, u64, s64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int64

# libc.ioctl through ctypes, not fcntl.ioctl: fcntl parses the argument as a signed int (SET_TSS_ADDR
# 0xFEFFD000 overflows), keeps the GIL for big buffers and retries EINTR from 3.14 on, which would
# spin forever on a kicked KVM_RUN (research §0.1 item 1). ctypes releases the GIL during the call.
_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int


def ioctl_raw(fd: int, request: int, arg=0) -> tuple[int, int]:
    """(return value, errno); for KVM_RUN, whose EINTR is ordinary control flow."""
    address = arg if isinstance(arg, int) else ctypes.addressof(arg)
    ret = _ioctl(fd, request, address)
    return ret, (ctypes.get_errno() if ret < 0 else 0)


def ioctl(fd: int, request: int, arg=0) -> int:
    """Issue an ioctl; `arg` is an int passed by value or a ctypes object passed by address.

    The caller keeps `arg` referenced for the duration of the call (research §1.5)."""
    ret, err = ioctl_raw(fd, request, arg)
    if ret < 0:
        raise OSError(err, f"{os.strerror(err)} (ioctl {request:#x})")
    return ret


# -- ioctl number encoding (asm-generic/ioctl.h) ----------------------------------------------------
KVMIO = 0xAE
_NONE, _WRITE, _READ = 0, 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_NONE, nr, 0)


def _ior(nr: int, ctype) -> int:
    return _ioc(_READ, nr, ctypes.sizeof(ctype))


def _iow(nr: int, ctype) -> int:
    return _ioc(_WRITE, nr, ctypes.sizeof(ctype))


def _iowr(nr: int, ctype) -> int:
    return _ioc(_READ | _WRITE, nr, ctypes.sizeof(ctype))


# -- structures (research §1.2) -----------------------------------------------------------------------
class KvmUserspaceMemoryRegion(ctypes.Structure):
    _fields_ = [("slot", u32), ("flags", u32), ("guest_phys_addr", u64), ("memory_size", u64),
                ("userspace_addr", u64)]


class KvmRegs(ctypes.Structure):
    _fields_ = [(name, u64) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class KvmSegment(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u32), ("selector", u16), ("type", u8), ("present", u8),
                ("dpl", u8), ("db", u8), ("s", u8), ("l", u8), ("g", u8), ("avl", u8),
                ("unusable", u8), ("padding", u8)]


class KvmDtable(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


class KvmSregs(ctypes.Structure):
    _fields_ = [(name, KvmSegment) for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")] + [
        ("gdt", KvmDtable), ("idt", KvmDtable),
        ("cr0", u64), ("cr2", u64), ("cr3", u64), ("cr4", u64), ("cr8", u64), ("efer", u64),
        ("apic_base", u64), ("interrupt_bitmap", u64 * 4)]


class KvmFpu(ctypes.Structure):
    _fields_ = [("fpr", u8 * 128), ("fcw", u16), ("fsw", u16), ("ftwx", u8), ("pad1", u8),
                ("last_opcode", u16), ("last_ip", u64), ("last_dp", u64), ("xmm", u8 * 256),
                ("mxcsr", u32), ("pad2", u32)]


class KvmXsave(ctypes.Structure):
    _fields_ = [("region", u32 * 1024)]


class KvmXcr(ctypes.Structure):
    _fields_ = [("xcr", u32), ("reserved", u32), ("value", u64)]


class KvmXcrs(ctypes.Structure):
    _fields_ = [("nr_xcrs", u32), ("flags", u32), ("xcrs", KvmXcr * 16), ("padding", u64 * 16)]


class KvmDebugregs(ctypes.Structure):
    _fields_ = [("db", u64 * 4), ("dr6", u64), ("dr7", u64), ("flags", u64), ("reserved", u64 * 9)]


class KvmLapicState(ctypes.Structure):
    _fields_ = [("regs", ctypes.c_char * 1024)]


class KvmVcpuEvents(ctypes.Structure):
    _fields_ = [("exception_injected", u8), ("exception_nr", u8), ("exception_has_error_code", u8),
                ("exception_pending", u8), ("exception_error_code", u32),
                ("interrupt_injected", u8), ("interrupt_nr", u8), ("interrupt_soft", u8),
                ("interrupt_shadow", u8),
                ("nmi_injected", u8), ("nmi_pending", u8), ("nmi_masked", u8), ("nmi_pad", u8),
                ("sipi_vector", u32), ("flags", u32),
                ("smi_smm", u8), ("smi_pending", u8), ("smi_inside_nmi", u8), ("smi_latched_init", u8),
                ("reserved", u8 * 27), ("exception_has_payload", u8), ("exception_payload", u64)]


class KvmMpState(ctypes.Structure):
    _fields_ = [("mp_state", u32)]


class KvmCpuidEntry2(ctypes.Structure):
    _fields_ = [("function", u32), ("index", u32), ("flags", u32), ("eax", u32), ("ebx", u32),
                ("ecx", u32), ("edx", u32), ("padding", u32 * 3)]


class KvmCpuid2(ctypes.Structure):
    """Header only; cpuid2_type(n) adds the entries."""
    _fields_ = [("nent", u32), ("padding", u32)]


class KvmMsrEntry(ctypes.Structure):
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class KvmMsrs(ctypes.Structure):
    _fields_ = [("nmsrs", u32), ("pad", u32)]


class KvmMsrList(ctypes.Structure):
    _fields_ = [("nmsrs", u32)]


class KvmPicState(ctypes.Structure):
    _fields_ = [(name, u8) for name in (
        "last_irr", "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select", "poll",
        "special_mask", "init_state", "auto_eoi", "rotate_on_auto_eoi", "special_fully_nested_mode",
        "init4", "elcr", "elcr_mask")]


class KvmIoapicState(ctypes.Structure):
    _fields_ = [("base_address", u64), ("ioregsel", u32), ("id", u32), ("irr", u32), ("pad", u32),
                ("redirtbl", u64 * 24)]


class _KvmIrqchipUnion(ctypes.Union):
    _fields_ = [("dummy", ctypes.c_char * 512), ("pic", KvmPicState), ("ioapic", KvmIoapicState)]


class KvmIrqchip(ctypes.Structure):
    _fields_ = [("chip_id", u32), ("pad", u32), ("chip", _KvmIrqchipUnion)]


class KvmPitChannelState(ctypes.Structure):
    _fields_ = [("count", u32), ("latched_count", u16), ("count_latched", u8), ("status_latched", u8),
                ("status", u8), ("read_state", u8), ("write_state", u8), ("write_latch", u8),
                ("rw_mode", u8), ("mode", u8), ("bcd", u8), ("gate", u8), ("count_load_time", s64)]


class KvmPitState2(ctypes.Structure):
    _fields_ = [("channels", KvmPitChannelState * 3), ("flags", u32), ("reserved", u32 * 9)]


class KvmPitConfig(ctypes.Structure):
    _fields_ = [("flags", u32), ("pad", u32 * 15)]


class KvmClockData(ctypes.Structure):
    _fields_ = [("clock", u64), ("flags", u32), ("pad0", u32), ("realtime", u64), ("host_tsc", u64),
                ("pad", u32 * 4)]


class KvmIrqLevel(ctypes.Structure):
    _fields_ = [("irq", u32), ("level", u32)]


class KvmIrqRoutingIrqchip(ctypes.Structure):
    _fields_ = [("irqchip", u32), ("pin", u32)]


class _KvmIrqRoutingUnion(ctypes.Union):
    _fields_ = [("irqchip", KvmIrqRoutingIrqchip), ("pad", u32 * 8)]


class KvmIrqRoutingEntry(ctypes.Structure):
    _fields_ = [("gsi", u32), ("type", u32), ("flags", u32), ("pad", u32), ("u", _KvmIrqRoutingUnion)]


class KvmIrqRouting(ctypes.Structure):
    _fields_ = [("nr", u32), ("flags", u32)]


class KvmDirtyLog(ctypes.Structure):
    _fields_ = [("slot", u32), ("padding", u32), ("dirty_bitmap", u64)]


# kvm_run, the page shared with the kernel on each vCPU fd (research §1.2).
class KvmRunIo(ctypes.Structure):
    _fields_ = [("direction", u8), ("size", u8), ("port", u16), ("count", u32), ("data_offset", u64)]


class KvmRunMmio(ctypes.Structure):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class KvmRunFailEntry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class KvmRunInternal(ctypes.Structure):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class KvmRunSystemEvent(ctypes.Structure):
    _fields_ = [("type", u32), ("ndata", u32), ("data", u64 * 16)]


class _KvmRunExit(ctypes.Union):
    _fields_ = [("io", KvmRunIo), ("mmio", KvmRunMmio), ("fail_entry", KvmRunFailEntry),
                ("internal", KvmRunInternal), ("system_event", KvmRunSystemEvent),
                ("padding", ctypes.c_char * 256)]


class KvmRun(ctypes.Structure):
    _fields_ = [("request_interrupt_window", u8), ("immediate_exit", u8), ("padding1", u8 * 6),
                ("exit_reason", u32), ("ready_for_interrupt_injection", u8), ("if_flag", u8),
                ("flags", u16), ("cr8", u64), ("apic_base", u64), ("exit", _KvmRunExit),
                ("kvm_valid_regs", u64), ("kvm_dirty_regs", u64), ("sync_regs", ctypes.c_char * 2048)]


def cpuid2_type(n: int):
    return type(f"KvmCpuid2_{n}", (ctypes.Structure,),
                {"_fields_": [("nent", u32), ("padding", u32), ("entries", KvmCpuidEntry2 * n)]})


def msrs_type(n: int):
    return type(f"KvmMsrs_{n}", (ctypes.Structure,),
                {"_fields_": [("nmsrs", u32), ("pad", u32), ("entries", KvmMsrEntry * n)]})


def msr_list_type(n: int):
    return type(f"KvmMsrList_{n}", (ctypes.Structure,), {"_fields_": [("nmsrs", u32), ("indices", u32 * n)]})


def irq_routing_type(n: int):
    return type(f"KvmIrqRouting_{n}", (ctypes.Structure,),
                {"_fields_": [("nr", u32), ("flags", u32), ("entries", KvmIrqRoutingEntry * n)]})


# -- ioctl numbers (research §1.1) -------------------------------------------------------------------
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_GET_MSR_INDEX_LIST = _iowr(0x02, KvmMsrList)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, KvmCpuid2)

KVM_CREATE_VCPU = _io(0x41)
KVM_GET_DIRTY_LOG = _iow(0x42, KvmDirtyLog)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, KvmUserspaceMemoryRegion)
KVM_SET_TSS_ADDR = _io(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _iow(0x48, u64)
KVM_CREATE_IRQCHIP = _io(0x60)
KVM_IRQ_LINE = _iow(0x61, KvmIrqLevel)
KVM_GET_IRQCHIP = _iowr(0x62, KvmIrqchip)
KVM_SET_IRQCHIP = _ior(0x63, KvmIrqchip)   # sic: declared _IOR in the uapi header
KVM_SET_GSI_ROUTING = _iow(0x6A, KvmIrqRouting)
KVM_CREATE_PIT2 = _iow(0x77, KvmPitConfig)
KVM_SET_CLOCK = _iow(0x7B, KvmClockData)
KVM_GET_CLOCK = _ior(0x7C, KvmClockData)
KVM_GET_PIT2 = _ior(0x9F, KvmPitState2)
KVM_SET_PIT2 = _iow(0xA0, KvmPitState2)

KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, KvmRegs)
KVM_SET_REGS = _iow(0x82, KvmRegs)
KVM_GET_SREGS = _ior(0x83, KvmSregs)
KVM_SET_SREGS = _iow(0x84, KvmSregs)
KVM_GET_MSRS = _iowr(0x88, KvmMsrs)
KVM_SET_MSRS = _iow(0x89, KvmMsrs)
KVM_GET_FPU = _ior(0x8C, KvmFpu)
KVM_SET_FPU = _iow(0x8D, KvmFpu)
KVM_GET_LAPIC = _ior(0x8E, KvmLapicState)
KVM_SET_LAPIC = _iow(0x8F, KvmLapicState)
KVM_SET_CPUID2 = _iow(0x90, KvmCpuid2)
KVM_GET_CPUID2 = _iowr(0x91, KvmCpuid2)
KVM_GET_MP_STATE = _ior(0x98, KvmMpState)
KVM_SET_MP_STATE = _iow(0x99, KvmMpState)
KVM_GET_VCPU_EVENTS = _ior(0x9F, KvmVcpuEvents)
KVM_SET_VCPU_EVENTS = _iow(0xA0, KvmVcpuEvents)
KVM_GET_DEBUGREGS = _ior(0xA1, KvmDebugregs)
KVM_SET_DEBUGREGS = _iow(0xA2, KvmDebugregs)
KVM_SET_TSC_KHZ = _io(0xA2)
KVM_GET_TSC_KHZ = _io(0xA3)
KVM_GET_XSAVE = _ior(0xA4, KvmXsave)
KVM_SET_XSAVE = _iow(0xA5, KvmXsave)
KVM_GET_XCRS = _ior(0xA6, KvmXcrs)
KVM_SET_XCRS = _iow(0xA7, KvmXcrs)
KVM_KVMCLOCK_CTRL = _io(0xAD)
KVM_GET_XSAVE2 = _ior(0xCF, KvmXsave)

# -- constants (research §1.1) ------------------------------------------------------------------------
KVM_API_VERSION = 12

KVM_MEM_LOG_DIRTY_PAGES = 1
KVM_MEM_READONLY = 2

KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT = 0, 1

KVM_INTERNAL_ERROR_NAMES = {1: "emulation", 2: "simultaneous exceptions", 3: "event delivery",
                            4: "unexpected exit reason"}
KVM_SYSTEM_EVENT_SHUTDOWN, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_CRASH = 1, 2, 3

KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED = 0, 1

KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC = 0, 1, 2
KVM_IRQ_ROUTING_IRQCHIP = 1
KVM_PIT_SPEAKER_DUMMY = 1

KVM_VCPUEVENT_VALID_SIPI_VECTOR = 2

KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1

KVM_CAP_IRQCHIP = 0
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_IRQ_ROUTING = 25
KVM_CAP_PIT2 = 33
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_ADJUST_CLOCK = 39
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_READONLY_MEM = 81
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_XSAVE2 = 208

MAX_IO_MSRS = 255   # arch/x86/kvm/x86.c: entries per GET/SET_MSRS call (research §1.9)
