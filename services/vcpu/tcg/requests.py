"""Requests into Unicorn's running JIT, raised the way QEMU's own devices interrupt a processor.

QEMU keeps a CPU's pending events in cpu->interrupt_request and makes translated code leave its
chain at the next block start by storing -1 in icount_decr.u16.high. Its loop then takes an
external interrupt only when RFLAGS.IF is set and no STI/MOV SS shadow is active, and checks again
whenever IF may have changed (STI, POPF and IRET end their block), exactly as the processor does.
Unicorn keeps that machinery but never raises a request itself. The engine marks the CPU as an SVM
guest that intercepts INTR, NMI and INIT, so each request reaches its interrupt hook as a #VMEXIT:
on the vCPU thread, at an instruction boundary, with IF and the shadows already honoured.

So no other thread ever calls uc_emu_stop(). Its stop flag is visible at once to the instruction
hooks of an instruction in flight, and Unicorn's SYSCALL, SYSENTER, CPUID and RDTSC helpers stop
looking for their hook when they see it: the instruction then completes without its emulation (a
system call returning its own number). That was the "rare tcg fault" of issue 21."""

from __future__ import annotations

import ctypes
import threading

import unicorn

from services.vcpu.tcg import cpustate as cs

HARD = 0x0002        # CPU_INTERRUPT_HARD: the INTR output of the interrupt controllers
NMI = 0x0200         # CPU_INTERRUPT_NMI: blocked while an NMI handler runs (until its IRET)
ATTENTION = 0x0400   # CPU_INTERRUPT_INIT, intercepted: "the engine wants the vCPU thread now"

# What each request becomes when the JIT takes it (SVM exit codes, AMD APM vol. 2, table C-1).
SVM_EXIT_INTR, SVM_EXIT_NMI, SVM_EXIT_INIT = 0x60, 0x61, 0x63


class CpuRequests:
    """The request lines of one Unicorn CPU; raise and lower from any thread."""

    def __init__(self, uc: unicorn.Uc):
        cpu = cs.cpu_address(uc)
        self._lines = ctypes.c_uint32.from_address(cpu + cs.CPU_INTERRUPT_REQUEST)
        icount = ctypes.c_uint64.from_address(cpu + cs.CPU_ICOUNT_DECR_PTR).value
        self._leave_chain = ctypes.c_int16.from_address(icount + 2)   # icount_decr.u16.high
        self._lock = threading.Lock()   # the JIT only reads the lines; our threads write them

    def raise_(self, bits: int) -> None:
        with self._lock:
            self._lines.value |= bits
            self._leave_chain.value = -1

    def lower(self, bits: int) -> None:
        with self._lock:
            self._lines.value &= ~bits

    def set(self, bits: int, level: bool) -> None:
        if level:
            if self._lines.value & bits != bits:
                self.raise_(bits)
        elif self._lines.value & bits:
            self.lower(bits)

    def raised(self, bits: int) -> bool:
        return bool(self._lines.value & bits)
