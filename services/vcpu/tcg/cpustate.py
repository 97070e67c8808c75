"""In-place access to the processor state inside Unicorn 2.1.4 (QEMU's CPUX86State).

Unicorn exposes no API for segment caches, hflags, the error code or the nested-fault state, which
interrupt delivery needs (research/unicorn-spike.md §1b, §1e). We map a ctypes structure over the
live CPUX86State at offsets of this exact build, and prove them with marker values at start-up."""

from __future__ import annotations

import ctypes
import struct

import unicorn
from unicorn import x86_const as X

EXPECTED_UNICORN = "2.1.4"
UC_CPU_POINTER = 0x1B8      # offsetof(struct uc_struct, cpu)
UC_CONTEXT_SIZE = 0x7E0     # offsetof(struct uc_struct, cpu_context_size): an anchor we can check
UC_NO_EXIT_REQUEST = 0x7F2  # offsetof(struct uc_struct, no_exit_request)
UC_INIT_DONE = 0x7F3        # offsetof(struct uc_struct, init_done)
ENV_RESET_SIZE = 5568       # offsetof(CPUX86State, end_reset_fields)
ENV_IN_X86CPU = 0x8A50      # offsetof(X86CPU, env)
CPU_INTERRUPT_REQUEST = 28  # offsetof(CPUState, interrupt_request)
CPU_ENV_PTR = 296           # offsetof(CPUState, env_ptr): an anchor we can check
CPU_ICOUNT_DECR_PTR = 304   # offsetof(CPUState, icount_decr_ptr)
ICOUNT_DECR_IN_X86CPU = ENV_IN_X86CPU - 16   # offsetof(X86CPU, neg.icount_decr)

R_ES, R_CS, R_SS, R_DS, R_FS, R_GS = range(6)

# hflags bits (qemu/target/i386/cpu.h)
HF_CPL_MASK = 3
HF_INHIBIT_IRQ = 1 << 3
HF_CS32 = 1 << 4
HF_SS32 = 1 << 5
HF_ADDSEG = 1 << 6
HF_PE = 1 << 7
HF_LMA = 1 << 14
HF_CS64 = 1 << 15
HF_GUEST = 1 << 21          # "SVM guest": makes the engine consult the intercepts below
HF2_NMI = 1 << 2

# segment-cache flags: the descriptor's high dword, as QEMU keeps it
DESC_G = 1 << 23
DESC_B = 1 << 22
DESC_L = 1 << 21
DESC_P = 1 << 15
DESC_DPL_SHIFT = 13
DESC_S = 1 << 12
DESC_CS = 1 << 11
DESC_C = 1 << 10
DESC_W = 1 << 9
DESC_A = 1 << 8

CR0_PE, CR0_PG = 1, 1 << 31
EFER_LMA = 1 << 10
CC_OP_EFLAGS = 1
CC_FLAGS = 0x8D5            # O S Z A P C
IF_FLAG, TF_FLAG, DF_FLAG, NT_FLAG, RF_FLAG, VM_FLAG, AC_FLAG = 0x200, 0x100, 0x400, 0x4000, 0x10000, 0x20000, 0x40000


class SegmentCache(ctypes.Structure):
    _fields_ = [("selector", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("base", ctypes.c_uint64),
                ("limit", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


def _layout(fields):
    """A ctypes structure with each field at an explicit offset, gaps filled with padding."""
    out, pos = [], 0
    for name, offset, ctype in fields:
        if offset > pos:
            out.append((f"_gap{offset}", ctypes.c_uint8 * (offset - pos)))
        out.append((name, ctype))
        pos = offset + ctypes.sizeof(ctype)
    return out


class CPUX86State(ctypes.Structure):
    _fields_ = _layout([
        ("regs", 0, ctypes.c_uint64 * 16),
        ("eip", 128, ctypes.c_uint64),
        ("eflags", 136, ctypes.c_uint64),
        ("cc_dst", 144, ctypes.c_uint64),
        ("cc_src", 152, ctypes.c_uint64),
        ("cc_src2", 160, ctypes.c_uint64),
        ("cc_op", 168, ctypes.c_uint32),
        ("df", 172, ctypes.c_int32),
        ("hflags", 176, ctypes.c_uint32),
        ("hflags2", 180, ctypes.c_uint32),
        ("segs", 184, SegmentCache * 6),
        ("ldt", 328, SegmentCache),
        ("tr", 352, SegmentCache),
        ("gdt", 376, SegmentCache),
        ("idt", 400, SegmentCache),
        ("cr", 424, ctypes.c_uint64 * 9),
        ("efer", 592, ctypes.c_uint64),
        ("sysenter_cs", 4800, ctypes.c_uint32),
        ("sysenter_esp", 4808, ctypes.c_uint64),
        ("sysenter_eip", 4816, ctypes.c_uint64),
        ("star", 4824, ctypes.c_uint64),
        ("lstar", 4840, ctypes.c_uint64),
        ("cstar", 4848, ctypes.c_uint64),
        ("fmask", 4856, ctypes.c_uint64),
        ("kernelgsbase", 4864, ctypes.c_uint64),
        ("error_code", 5384, ctypes.c_int32),
        ("exception_is_int", 5388, ctypes.c_int32),
        ("exception_next_eip", 5392, ctypes.c_uint64),
        ("dr", 5400, ctypes.c_uint64 * 8),     # proven; the exception fields are fixed distances from it
        ("old_exception", 5496, ctypes.c_int32),
        ("vm_vmcb", 5504, ctypes.c_uint64),
        ("intercept", 5520, ctypes.c_uint64),
    ])


HEADBOX_PATCH_LEVEL = 1     # what scripts/unicorn/headbox.patch makes headbox_patches() answer


class UnicornLayoutError(RuntimeError):
    pass


def headbox_patch_level() -> int:
    """Which of Headbox's patches the loaded Unicorn carries (0: a stock build)."""
    from unicorn.unicorn_py3 import unicorn as binding
    probe = getattr(binding.uclib, "headbox_patches", None)
    if probe is None:
        return 0
    probe.restype = ctypes.c_uint
    return probe()


def locate_env(uc: unicorn.Uc) -> CPUX86State:
    """The live CPUX86State of `uc`, after proving the offsets with marker values."""
    env = CPUX86State.from_address(cpu_address(uc) + ENV_IN_X86CPU)
    _prove_layout(uc, env)
    return env


def cpu_address(uc: unicorn.Uc) -> int:
    """Where `uc`'s X86CPU lives (QEMU's CPUState, then the CPU state proper), after checking
    the pointers this build keeps in it."""
    if unicorn.__version__ != EXPECTED_UNICORN:
        raise UnicornLayoutError(
            f"the tcg accelerator needs unicorn=={EXPECTED_UNICORN}, found {unicorn.__version__}")
    uc.reg_read(X.UC_X86_REG_RAX)  # Unicorn creates the CPU lazily, on first use
    cpu = ctypes.c_uint64.from_address(uc._uch.value + UC_CPU_POINTER).value
    if not cpu:
        raise UnicornLayoutError("unicorn has no CPU object where this build keeps it")
    if ctypes.c_uint64.from_address(cpu + CPU_ENV_PTR).value != cpu + ENV_IN_X86CPU or \
            ctypes.c_uint64.from_address(cpu + CPU_ICOUNT_DECR_PTR).value != cpu + ICOUNT_DECR_IN_X86CPU:
        raise UnicornLayoutError("unicorn's CPU object is not laid out as this build keeps it")
    return cpu


def stop_only_between_blocks(uc: unicorn.Uc) -> None:
    """Make requests to leave the JIT (requests.py) take effect only where a translation block
    starts.

    Unicorn checks for them after every guest load and store and, when one is pending, exits
    with the state rolled back to the start of that instruction, so the instruction runs again:
    a read-modify-write such as `incl %gs:preempt_count` or `xchg` is applied twice. Its
    `no_exit_request` flag (kept for ARM IT blocks) drops those checks at translation time; the
    check at the start of every block stays, and that is a clean instruction boundary. It also
    removes the helper call behind Unicorn's slow memory accesses (unicorn-spike.md §2)."""
    handle = uc._uch.value
    if ctypes.c_int32.from_address(handle + UC_CONTEXT_SIZE).value != ENV_RESET_SIZE or \
            ctypes.c_uint8.from_address(handle + UC_INIT_DONE).value != 1:
        raise UnicornLayoutError("unicorn's engine state is not where this build keeps it")
    ctypes.c_uint8.from_address(handle + UC_NO_EXIT_REQUEST).value = 1
    uc.ctl_flush_tb()


def _prove_layout(uc: unicorn.Uc, env: CPUX86State) -> None:
    checks = []

    def mark(reg, value, field):
        uc.reg_write(reg, value)
        checks.append((field, value, field()))

    mark(X.UC_X86_REG_RAX, 0x5A5A0000C0DE0001, lambda: env.regs[0])
    mark(X.UC_X86_REG_R15, 0x5A5A0000C0DE000F, lambda: env.regs[15])
    mark(X.UC_X86_REG_RIP, 0x0000777712345678, lambda: env.eip)
    mark(X.UC_X86_REG_CR3, 0x0000000012345000, lambda: env.cr[3])
    mark(X.UC_X86_REG_DR0, 0x00000000D0D0D0D0, lambda: env.dr[0])
    mark(X.UC_X86_REG_DR7, 0x0000000000000400, lambda: env.dr[7])
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x11112222, 0x3F, 0))
    checks.append(("gdt", (0x11112222, 0x3F), (env.gdt.base, env.gdt.limit)))
    uc.reg_write(X.UC_X86_REG_IDTR, (0, 0x33334444, 0x7FF, 0))
    checks.append(("idt", (0x33334444, 0x7FF), (env.idt.base, env.idt.limit)))
    for msr, value, field in ((0x174, 0x10, lambda: env.sysenter_cs),
                              (0x176, 0xFEEDBEF0, lambda: env.sysenter_eip),
                              (0xC0000081, 0x0023001000000000, lambda: env.star),
                              (0xC0000082, 0xFFFFFFFF81000000, lambda: env.lstar),
                              (0xC0000084, 0x47700, lambda: env.fmask),
                              (0xC0000102, 0xFFFF888012345678, lambda: env.kernelgsbase)):
        uc.reg_write(X.UC_X86_REG_MSR, (msr, value))
        checks.append((hex(msr), value, field()))
    wrong = [name if isinstance(name, str) else "register" for name, want, got in checks if want != got]
    if wrong:
        raise UnicornLayoutError("unicorn's CPU state is not where this build keeps it: " + ", ".join(wrong))
    for reg in (X.UC_X86_REG_RAX, X.UC_X86_REG_R15, X.UC_X86_REG_RIP, X.UC_X86_REG_CR3,
                X.UC_X86_REG_DR0, X.UC_X86_REG_DR7):
        uc.reg_write(reg, 0)
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0xFFFF, 0))
    uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0xFFFF, 0))
    for msr in (0x174, 0x176, 0xC0000081, 0xC0000082, 0xC0000084, 0xC0000102):
        uc.reg_write(X.UC_X86_REG_MSR, (msr, 0))


def load_segment_cache(env: CPUX86State, seg: int, selector: int, base: int, limit: int, flags: int) -> None:
    """Load a segment register's hidden part and keep hflags in step, as the processor does."""
    sc = env.segs[seg]
    sc.selector, sc.base, sc.limit, sc.flags = selector, base, limit, flags
    hflags = env.hflags
    if seg == R_CS:
        if hflags & HF_LMA and flags & DESC_L:
            hflags = (hflags | HF_CS32 | HF_SS32 | HF_CS64) & ~HF_ADDSEG
        else:
            hflags = (hflags & ~(HF_CS32 | HF_CS64)) | (HF_CS32 if flags & DESC_B else 0)
    if seg == R_SS:
        hflags = (hflags & ~HF_CPL_MASK) | ((flags >> DESC_DPL_SHIFT) & 3)
    ss32 = HF_SS32 if env.segs[R_SS].flags & DESC_B else 0
    if hflags & HF_CS64:
        addseg = 0
    elif not (env.cr[0] & CR0_PE) or env.eflags & VM_FLAG or not (hflags & HF_CS32):
        addseg = HF_ADDSEG
    else:
        addseg = HF_ADDSEG if (env.segs[R_DS].base | env.segs[R_ES].base | env.segs[R_SS].base) else 0
    if not hflags & HF_CS64:
        hflags = (hflags & ~(HF_SS32 | HF_ADDSEG)) | ss32 | addseg
    env.hflags = hflags


def set_eflags(env: CPUX86State, value: int) -> None:
    """Write the whole EFLAGS register the way the engine keeps it (lazy condition codes)."""
    env.cc_src = value & CC_FLAGS
    env.cc_op = CC_OP_EFLAGS
    env.df = -1 if value & DF_FLAG else 1
    env.eflags = (value & ~(CC_FLAGS | DF_FLAG)) | 2


def descriptor_flags(high: int) -> int:
    """Segment-cache flags from a descriptor's high dword."""
    return high & 0x00F0FF00


def descriptor_base(low: int, high: int) -> int:
    return (low >> 16) | ((high & 0xFF) << 16) | (high & 0xFF000000)


def descriptor_limit(low: int, high: int) -> int:
    limit = (low & 0xFFFF) | (high & 0x000F0000)
    return (limit << 12) | 0xFFF if high & DESC_G else limit


def pack_u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def eflags_reader(env: CPUX86State):
    """() -> the guest's whole EFLAGS, from inside a hook or outside the JIT: QEMU's own helper
    folds in the lazily kept condition codes and DF (VM and RF it leaves out: we add them)."""
    from unicorn.unicorn_py3 import unicorn as binding
    helper = binding.uclib.helper_read_eflags_x86_64
    helper.restype = ctypes.c_uint64
    helper.argtypes = [ctypes.c_void_p]
    address = ctypes.addressof(env)

    def read() -> int:
        return helper(address) | (env.eflags & (VM_FLAG | RF_FLAG))
    return read


class CodeInvalidator:
    """Forgets translated code for guest RAM that something other than the vCPU wrote (DMA).

    Unicorn's own uc_ctl_remove_cache takes a guest-virtual address and walks the guest's page
    tables, raising stray faults outside execution; QEMU's physical invalidation takes a RAM
    address, which the host pointer of the page gives."""

    def __init__(self, uc: unicorn.Uc):
        from unicorn.unicorn_py3 import unicorn as binding
        lib = binding.uclib
        self._ram_addr = lib.qemu_ram_addr_from_host_x86_64
        self._ram_addr.restype = ctypes.c_uint64
        self._ram_addr.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._invalidate = lib.tb_invalidate_phys_range_x86_64
        self._invalidate.restype = None
        self._invalidate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]
        self._handle = uc._uch.value

    def host_range(self, host_address: int, length: int) -> None:
        """Invalidate `length` bytes of one mapped RAM block starting at `host_address`."""
        start = self._ram_addr(self._handle, host_address)
        self._invalidate(self._handle, start, start + length)
