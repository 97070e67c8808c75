"""SYSCALL and SYSENTER for the software accelerator, which Unicorn leaves undone.

Unicorn replaces both instructions by "call the hooks, then advance EIP by the instruction length"
(research/unicorn-spike.md §1c); these hooks do what the processor does (Intel SDM vol. 2, SYSCALL and
SYSENTER). SYSRET and SYSEXIT are emulated by Unicorn itself."""

from __future__ import annotations

from services.vcpu.tcg.cpustate import (
    CR0_PE,
    DESC_A,
    DESC_B,
    DESC_CS,
    DESC_G,
    DESC_L,
    DESC_P,
    DESC_S,
    DESC_W,
    HF_CS64,
    HF_LMA,
    IF_FLAG,
    R_CS,
    R_SS,
    RF_FLAG,
    VM_FLAG,
    CPUX86State,
    load_segment_cache,
    set_eflags,
)
from services.vcpu.tcg.delivery import GP, UD, CpuFault

INSTRUCTION_LENGTH = 2     # 0F 05 and 0F 34: Unicorn adds it to EIP after the hook returns
EFER_SCE = 1
CODE_READ = 1 << 9
FLAT = 0xFFFFFFFF


def _flat_code(dpl: int, long_mode: bool) -> int:
    bits = DESC_L if long_mode else DESC_B
    return DESC_G | bits | DESC_P | (dpl << 13) | DESC_S | DESC_CS | CODE_READ | DESC_A


def _flat_data(dpl: int) -> int:
    return DESC_G | DESC_B | DESC_P | (dpl << 13) | DESC_S | DESC_W | DESC_A


def syscall(env: CPUX86State, eflags: int) -> int:
    """Enter the kernel through STAR/LSTAR/CSTAR. Returns the new RIP (before Unicorn's += 2)."""
    if not env.efer & EFER_SCE:
        raise CpuFault(UD)
    next_rip = env.eip + INSTRUCTION_LENGTH
    selector = (env.star >> 32) & 0xFFFF
    long_mode = bool(env.hflags & HF_LMA)
    if long_mode:
        env.regs[1] = next_rip                      # RCX
        env.regs[11] = eflags & ~RF_FLAG            # R11
        target = env.lstar if env.hflags & HF_CS64 else env.cstar
        new_flags = eflags & ~env.fmask & ~RF_FLAG
    else:
        env.regs[1] = next_rip & 0xFFFFFFFF
        target = env.star & 0xFFFFFFFF
        new_flags = eflags & ~(IF_FLAG | RF_FLAG | VM_FLAG)
    load_segment_cache(env, R_CS, selector & 0xFFFC, 0, FLAT, _flat_code(0, long_mode))
    load_segment_cache(env, R_SS, (selector + 8) & 0xFFFC, 0, FLAT, _flat_data(0))
    set_eflags(env, new_flags)
    return target


def sysenter(env: CPUX86State, eflags: int) -> int:
    """Enter the kernel through the SYSENTER MSRs. Returns the new EIP (before Unicorn's += 2)."""
    if not env.cr[0] & CR0_PE:
        raise CpuFault(GP, 0)
    selector = env.sysenter_cs & 0xFFFC
    if selector == 0:
        raise CpuFault(GP, 0)
    long_mode = bool(env.hflags & HF_LMA)
    set_eflags(env, eflags & ~(VM_FLAG | IF_FLAG | RF_FLAG))
    load_segment_cache(env, R_CS, selector, 0, FLAT, _flat_code(0, long_mode))
    load_segment_cache(env, R_SS, selector + 8, 0, FLAT, _flat_data(0))
    env.regs[4] = env.sysenter_esp if long_mode else env.sysenter_esp & 0xFFFFFFFF
    return env.sysenter_eip if long_mode else env.sysenter_eip & 0xFFFFFFFF
