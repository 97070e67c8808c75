"""The software accelerator: guest code runs in Unicorn's JIT, the rest of the processor is ours.

Unicorn translates and runs guest instructions. This engine adds what it leaves out: interrupt and
exception delivery (delivery.py), SYSCALL/SYSENTER (fastcall.py), the PIC/PIT/LAPIC/IO-APIC and
their timers (services/hw/interrupts), whose outputs reach the running JIT as request lines (requests.py),
HLT idling, and the routing of port and MMIO accesses.

Threads: the vCPU thread runs the JIT and every hook; the clock thread fires due timers; device
threads drive interrupt lines. The other threads only raise request lines: the JIT answers at the
next instruction boundary that allows it, in the vCPU thread, and only there is uc_emu_stop()
called.

(~670 lines, past the layout's ~600: what is left here is the set of hooks Unicorn calls on one
object, which share the vCPU thread's state; each concern with its own state has its own module.)"""

from __future__ import annotations

import ctypes
import logging
import threading
import time

import numpy as np
import unicorn
from unicorn import x86_const as X

from services.hw import cpuid
from services.hw.interrupts.irqchip import InterruptChip
from services.hw.memory import FOUR_GIB, IOAPIC_BASE, LAPIC_BASE, PAGE
from services.ipc.shm import PrivateRegion
from services.vcpu import engine as base
from services.vcpu.engine import Engine, EngineError, StopReason
from services.vcpu.tcg import cpustate as cs
from services.vcpu.tcg import fastcall, string_io
from services.vcpu.tcg.delivery import (
    EXCEPTION,
    EXTERNAL,
    GP,
    NMI,
    SOFTWARE,
    UD,
    WITH_ERROR_CODE,
    CpuFault,
    Delivery,
    PhysicalMemory,
    TripleFault,
    UnsupportedGuestFeature,
)
from services.vcpu.tcg.requests import (
    ATTENTION,
    HARD,
    SVM_EXIT_INIT,
    SVM_EXIT_INTR,
    SVM_EXIT_NMI,
    CpuRequests,
)
from services.vcpu.tcg.requests import NMI as NMI_LINE

log = logging.getLogger("headbox.vcpu.tcg")

ENV_RESET_SIZE = cs.ENV_RESET_SIZE

# Unicorn has no RDMSR/WRMSR/HLT hooks and no way in for interrupt requests, but it keeps QEMU's SVM
# intercept checks: with the CPU marked as an SVM guest, an intercepted instruction or request
# raises EXCP_VMEXIT + exit code, which reaches our interrupt hook. The VMCB and MSR permission map
# live in three pages of guest-physical space far above anything a guest maps.
INTERCEPT_AREA = (1 << 46) - 0x10000
VMCB_MSRPM_BASE = 0x48          # offsetof(struct vmcb, control.msrpm_base_pa)
EXCP_VMEXIT = 0x100
SVM_EXIT_HLT, SVM_EXIT_MSR, SVM_EXIT_SHUTDOWN = 0x78, 0x7C, 0x7F
INTERCEPTS = sum(1 << (code - SVM_EXIT_INTR) for code in
                 (SVM_EXIT_INTR, SVM_EXIT_NMI, SVM_EXIT_INIT, SVM_EXIT_HLT, SVM_EXIT_MSR))
MSR_APIC_BASE = 0x1B
# Beyond Unicorn's Haswell model the processor has IA32_ARCH_CAPABILITIES, with the "not affected"
# bit of each speculative-execution flaw: a JIT does not speculate. Linux then leaves out page-table
# isolation and the buffer clearing on each return to user mode, which flush the JIT's TLB and jump
# cache at every system call and interrupt.
MSR_ARCH_CAPABILITIES = 0x10A
CPUID7_EDX_ARCH_CAPABILITIES = 1 << 29
ARCH_CAPABILITIES = sum(1 << bit for bit in (
    0, 3, 4, 5, 6, 8,         # RDCL_NO, SKIP_L1DFL_VMENTRY, SSB_NO, MDS_NO, PSCHANGE_MC_NO, TAA_NO
    13, 14, 15, 20, 24,       # SBDR_SSDP_NO, FBSDP_NO, PSDP_NO, BHI_NO, PBRSB_NO
    26, 27, 62))              # GDS_NO, RFDS_NO, ITS_NO
EMULATED_MSRS = (MSR_APIC_BASE, MSR_ARCH_CAPABILITIES)
NO_UNTIL = 0                   # `until` is ignored: the exits mechanism is on, with no exits
UC_RWX = unicorn.UC_PROT_ALL
THROTTLE_PERIOD = 0.01         # how often a throttled vCPU leaves the guest to sleep its share


class TcgEngine(Engine):
    name = "tcg"

    def __init__(self, memory, bus, cpus: int = 1, *, cpuid_values: dict | None = None, **_options):
        if cpus != 1:
            raise EngineError(
                f"the tcg accelerator runs one vCPU, not {cpus}: Unicorn instances sharing RAM do "
                "not make locked instructions atomic (use --cpus 1, or kvm on a host with VT-x/AMD-V)")
        super().__init__(memory, bus, cpus)
        self.uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        self.env = cs.locate_env(self.uc)
        self._cpuid_values = {int(leaf): tuple(regs) for leaf, regs in (cpuid_values or {}).items()}
        eax, ebx, ecx, edx = self._model_cpuid(7)
        self._leaf7 = (eax, ebx, ecx, edx | CPUID7_EDX_ARCH_CAPABILITIES)
        cs.stop_only_between_blocks(self.uc)
        # No `until` address: when emu_start returns, Unicorn invalidates the code at the exit
        # address by translating it through the guest's page tables, which raises a #GP or #PF
        # outside the guest's execution (stale nested-fault state, clobbered CR2, a longjmp into
        # a finished frame). With the exits mechanism on and no exits, nothing is looked up.
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits([])
        self.env_address = ctypes.addressof(self.env)
        self.requests = CpuRequests(self.uc)
        self.chip = InterruptChip(cpus=1)
        self.chip_lock = threading.RLock()      # taken before _wake when both are needed
        self._eflags = cs.eflags_reader(self.env)
        self.delivery = Delivery(self.env, PhysicalMemory(self._phys_read, self._phys_write, memory.ram_offset,
                                                          memory.ram.buf), self._eflags)
        self._wake = threading.Condition()      # the idle vCPU and the clock thread sleep on it
        self._clock_deadline: int | None = None  # what the clock thread sleeps until (ns)
        self._halted = False
        self._triple_fault = False
        self._throttle = 0.0        # share of time kept out of the guest (teleport auto-converge)
        self._closing = False
        self._dma_written: list[tuple[int, int]] = []   # device writes not yet purged from the JIT
        self._dma_lock = threading.Lock()
        self._rep_ins_at: dict[int, string_io.RepIns] = {}
        self._map_memory()
        self._install_hooks()
        self._shadow: np.ndarray | None = None     # RAM as of the last dirty_pages() call
        self.reset()
        self._clock = threading.Thread(target=self._clock_loop, name="tcg-clock", daemon=True)
        self._clock.start()
        log.info("tcg accelerator: Unicorn %s, 1 vCPU, %d MiB RAM", unicorn.__version__, memory.ram_size >> 20)
        if cs.headbox_patch_level() < cs.HEADBOX_PATCH_LEVEL:
            log.warning("this Unicorn is a stock build, not Headbox's (run scripts/setup): guest stores to "
                        "RAM take its slow path, several times slower")

    # -- memory --------------------------------------------------------------------------------
    def _map_memory(self) -> None:
        uc = self.uc
        mapped = []
        for slot in self.memory.slots():
            uc.mem_map_ptr(slot.gpa, slot.size, UC_RWX, slot.host_address)
            mapped.append((slot.gpa, slot.end))
        self._intercepts = PrivateRegion(3 * PAGE)
        uc.mem_map_ptr(INTERCEPT_AREA, 3 * PAGE, unicorn.UC_PROT_READ, self._intercepts.address)
        msrpm = INTERCEPT_AREA + PAGE
        self._intercepts.buf[VMCB_MSRPM_BASE:VMCB_MSRPM_BASE + 8] = msrpm.to_bytes(8, "little")
        for msr in EMULATED_MSRS:   # two bits per MSR: read, write
            byte, bit = divmod(msr * 2, 8)
            self._intercepts.buf[PAGE + byte] |= 3 << bit
        uc.mmio_map(LAPIC_BASE, PAGE, self._lapic_read, None, self._lapic_write, None)
        uc.mmio_map(IOAPIC_BASE, PAGE, self._ioapic_read, None, self._ioapic_write, None)
        mapped += [(LAPIC_BASE, LAPIC_BASE + PAGE), (IOAPIC_BASE, IOAPIC_BASE + PAGE)]
        # Every other address below 4 GiB is MMIO of the device bus (VGA window, PCI hole, ...).
        pos = 0
        for start, end in sorted(mapped):
            if start > pos and pos < FOUR_GIB:
                self._map_bus_window(pos, min(start, FOUR_GIB) - pos)
            pos = max(pos, end)
        self._slots = sorted((s.gpa, s.end, s.region.buf, s.offset) for s in self.memory.slots())
        self._ram_slots = [(s.gpa, s.end, s.region.buf, s.offset, s.host_address)
                           for s in self.memory.slots() if not s.readonly]
        self._code = cs.CodeInvalidator(uc)

    def _map_bus_window(self, start: int, size: int) -> None:
        def read(uc, offset, size_, _ud, start=start):
            if self._stopping():
                return (1 << (8 * size_)) - 1
            return self.bus.mmio_read(start + offset, size_)

        def write(uc, offset, size_, value, _ud, start=start):
            if not self._stopping():
                self.bus.mmio_write(start + offset, size_, value)
        self.uc.mmio_map(start, size, read, None, write, None)

    def _phys_read(self, gpa: int, size: int) -> bytes:
        for start, end, buf, offset in self._slots:
            if start <= gpa and gpa + size <= end:
                pos = offset + gpa - start
                return bytes(buf[pos:pos + size])
        return bytes(self.uc.mem_read(gpa, size))

    def _phys_write(self, gpa: int, data: bytes) -> None:
        for start, end, buf, offset in self._slots:
            if start <= gpa and gpa + len(data) <= end:
                pos = offset + gpa - start
                buf[pos:pos + len(data)] = data
                return
        self.uc.mem_write(gpa, data)

    # -- hooks: the places where Unicorn hands control back to us --------------------------------
    def _install_hooks(self) -> None:
        uc = self.uc
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_in, None, 1, 0, X.UC_X86_INS_IN)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_syscall, None, 1, 0, X.UC_X86_INS_SYSCALL)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_sysenter, None, 1, 0, X.UC_X86_INS_SYSENTER)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_cpuid, None, 1, 0, X.UC_X86_INS_CPUID)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(unicorn.UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(unicorn.UC_HOOK_MEM_UNMAPPED, self._on_unmapped)

    def _on_cpuid(self, uc, _ud) -> int:
        """VirtualBox's --cpuid: the configured leaves answer with the configured values; leaf 7
        (subleaf 0) also shows IA32_ARCH_CAPABILITIES."""
        leaf = uc.reg_read(X.UC_X86_REG_EAX) & 0xFFFFFFFF
        regs = self._cpuid_values.get(leaf)
        if regs is None:
            if leaf != 7 or uc.reg_read(X.UC_X86_REG_RCX) & 0xFFFFFFFF:
                return 0                    # Unicorn's own answer
            regs = self._leaf7
        for reg, value in zip((X.UC_X86_REG_RAX, X.UC_X86_REG_RBX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX), regs):
            uc.reg_write(reg, value)
        return 1                            # handled: skip the instruction's own result

    def cpu_features(self) -> dict[str, int]:
        return cpuid.features(self._guest_cpuid)

    def _guest_cpuid(self, leaf: int) -> tuple[int, int, int, int]:
        """What CPUID answers the guest for a leaf (subleaf 0)."""
        if leaf in self._cpuid_values:
            return self._cpuid_values[leaf]
        return self._leaf7 if leaf == 7 else self._model_cpuid(leaf)

    @staticmethod
    def _model_cpuid(leaf: int) -> tuple[int, int, int, int]:
        """Unicorn's answer for a leaf (subleaf 0), as a scratch instance computes it."""
        scratch = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        scratch.mem_map(0x1000, 0x1000)
        scratch.mem_write(0x1000, b"\x0f\xa2")           # cpuid
        scratch.reg_write(X.UC_X86_REG_RAX, leaf)
        scratch.reg_write(X.UC_X86_REG_RCX, 0)
        scratch.emu_start(0x1000, 0x1002)
        return tuple(scratch.reg_read(r) & 0xFFFFFFFF for r in
                     (X.UC_X86_REG_RAX, X.UC_X86_REG_RBX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX))

    def _stopping(self) -> bool:
        """Power-off or reset was requested: Unicorn finishes the current block, but the
        instructions it still runs must not reach devices."""
        reason = self._stop_reason
        return reason is not None and reason is not StopReason.PAUSED

    def _on_in(self, uc, port, size, _ud):
        if self._stopping():
            return (1 << (8 * size)) - 1
        try:
            value = self._port_in(port, size)
        except Exception:
            log.exception("reading port %#x failed", port)
            value = (1 << (8 * size)) - 1
        return value

    def _port_in(self, port: int, size: int) -> int:
        with self.chip_lock:
            value = self.chip.pio_read(port, size, time.monotonic_ns())
        if value is not None:
            return value
        env = self.env
        rip = env.segs[cs.R_CS].base + env.eip
        info = self._rep_ins_at.get(rip)
        if info is None:
            try:
                code = self.delivery._read_linear(rip, 8, user=False)
            except CpuFault:
                code = b""
            info = self._rep_ins_at[rip] = string_io.decode(code, env.hflags)
        if info.rep:
            value = string_io.complete(self, info, port, size)
            if value is not None:
                return value
        return self.bus.pio_read(port, size)

    def forget_code(self, gpa: int, length: int) -> None:
        """We wrote guest RAM behind the JIT's back (vCPU thread, inside a hook): purge at the
        next block boundary."""
        self.note_dma([(gpa, length)])

    def _on_out(self, uc, port, size, value, _ud):
        if self._stopping():
            return
        try:
            with self.chip_lock:
                handled = self.chip.pio_write(port, size, value, time.monotonic_ns())
                if handled:
                    self._after_chip_change()
            if not handled:
                self.bus.pio_write(port, size, value)
        except Exception:
            log.exception("writing port %#x failed", port)

    def _lapic_read(self, uc, offset, size, _ud):
        with self.chip_lock:
            value = self.chip.mmio_read(LAPIC_BASE + offset, size, time.monotonic_ns())
        return (1 << (8 * size)) - 1 if value is None else value   # None: the APIC is disabled

    def _lapic_write(self, uc, offset, size, value, _ud):
        with self.chip_lock:
            self.chip.mmio_write(LAPIC_BASE + offset, size, value, time.monotonic_ns())
            self._after_chip_change()

    def _ioapic_read(self, uc, offset, size, _ud):
        with self.chip_lock:
            value = self.chip.mmio_read(IOAPIC_BASE + offset, size, time.monotonic_ns())
        return (1 << (8 * size)) - 1 if value is None else value

    def _ioapic_write(self, uc, offset, size, value, _ud):
        with self.chip_lock:
            self.chip.mmio_write(IOAPIC_BASE + offset, size, value, time.monotonic_ns())
            self._after_chip_change()

    def _after_chip_change(self) -> None:
        """A register write may have changed an interrupt output or moved a timer deadline
        (called with chip_lock held)."""
        self._update_lines()
        deadline = self.chip.next_deadline()
        if deadline is not None and (self._clock_deadline is None or deadline < self._clock_deadline):
            with self._wake:                     # the clock thread sleeps until a later time
                self._clock_deadline = deadline
                self._wake.notify_all()

    def _update_lines(self) -> None:
        """Mirror the interrupt controllers' outputs on the processor's request lines (called
        with chip_lock held); a line going up wakes a halted vCPU."""
        requests, chip = self.requests, self.chip
        was_up = requests.raised(HARD | NMI_LINE)
        requests.set(HARD, chip.interrupt_pending())
        requests.set(NMI_LINE, chip.nmi_pending())
        if requests.raised(HARD | NMI_LINE) and not was_up:
            with self._wake:
                self._wake.notify_all()

    def _on_interrupt(self, uc, intno, _ud):
        env = self.env
        try:
            if intno >= EXCP_VMEXIT:
                self._on_intercept(intno - EXCP_VMEXIT)
            elif env.exception_is_int:
                self._deliver(intno, SOFTWARE, 0, lambda: self._int_length(intno))
            else:
                self._deliver(intno, EXCEPTION, env.error_code if intno in WITH_ERROR_CODE else 0)
        except Exception:
            log.exception("delivering vector %#x at RIP %#x failed", intno, env.eip)
            self.request_stop(StopReason.ERROR)
        # Unicorn moves EIP to exception_next_eip before this hook whenever exception_is_int is
        # set, and an intercept (which never sets it) would inherit the last INT n's flag.
        env.exception_is_int = 0

    def _on_intercept(self, code: int) -> None:
        """An intercepted instruction (EIP points at it) or a request line the JIT took."""
        env = self.env
        if code == SVM_EXIT_INTR:
            self._take_interrupt()
        elif code == SVM_EXIT_NMI:
            self._take_nmi()
        elif code == SVM_EXIT_INIT:
            self._attend()
        elif code == SVM_EXIT_HLT:
            env.eip += 1
            env.hflags &= ~cs.HF_INHIBIT_IRQ   # `sti; hlt` must wake: the shadow ends with HLT
            if not self._halt_ends():          # else the JIT takes the interrupt right away
                self._halted = True
                self.uc.emu_stop()
        elif code == SVM_EXIT_MSR:
            self._msr_access(write=env.error_code == 1)
        elif code == SVM_EXIT_SHUTDOWN:      # Unicorn's own nested-fault check saw a triple fault
            log.warning("triple fault at RIP %#x: the processor shuts down", env.eip)
            self._triple_fault = True
            self.uc.emu_stop()
        else:
            log.error("unexpected intercept %#x at RIP %#x", code, env.eip)
            self.request_stop(StopReason.ERROR)

    def _take_interrupt(self) -> None:
        """The INTR line with IF set and no interrupt shadow: the INTA cycle, then delivery."""
        with self.chip_lock:
            vector = self.chip.acknowledge()
            self._update_lines()
        if vector is not None:       # None: the request went away before the processor looked
            self._halted = False     # it may come right after a HLT, before the JIT returned
            self._deliver(vector, EXTERNAL, 0)

    def _take_nmi(self) -> None:
        """An NMI while no NMI handler runs; the next one waits for this handler's IRET."""
        with self.chip_lock:
            taken = self.chip.take_nmi()
            self._update_lines()
        if taken:
            self._halted = False
            self.env.hflags2 |= cs.HF2_NMI
            self._deliver(NMI, EXTERNAL, 0)

    def _attend(self) -> None:
        """Another thread asked for the vCPU thread: leave the JIT for a stop or a throttle
        sleep, and forget code that a device overwrote."""
        self.requests.lower(ATTENTION)
        if self._dma_written:
            self._purge_dma_writes()
        if self._stop_pending() or self._throttle:
            self.uc.emu_stop()

    def _msr_access(self, write: bool) -> None:
        env = self.env
        msr = env.regs[1] & 0xFFFFFFFF
        if env.hflags & cs.HF_CPL_MASK:
            self._deliver(GP, EXCEPTION, 0)
            return
        if write:
            value = (env.regs[2] & 0xFFFFFFFF) << 32 | (env.regs[0] & 0xFFFFFFFF)
            if msr == MSR_APIC_BASE:
                with self.chip_lock:
                    self.chip.apic_base_msr = value
                    self._after_chip_change()
            else:   # outside the ranges the permission map covers: no such MSR here
                self._deliver(GP, EXCEPTION, 0)
                return
        else:
            if msr == MSR_APIC_BASE:
                with self.chip_lock:
                    value = self.chip.apic_base_msr
            elif msr == MSR_ARCH_CAPABILITIES:
                value = ARCH_CAPABILITIES
            else:
                self._deliver(GP, EXCEPTION, 0)
                return
            env.regs[0], env.regs[2] = value & 0xFFFFFFFF, value >> 32
        env.eip += 2

    def _int_length(self, vector: int) -> int:
        """Length of the INT n / INT3 / INTO that EIP has just stepped over."""
        try:
            before = self.delivery._read_linear(self.env.segs[cs.R_CS].base + self.env.eip - 2, 2, False)
        except CpuFault:
            return 2
        return 2 if before[0] == 0xCD and before[1] == vector else 1

    def _on_invalid(self, uc, _ud):
        try:
            self._deliver(UD, EXCEPTION, 0)
        except Exception:
            log.exception("delivering #UD at RIP %#x failed", self.env.eip)
            self.request_stop(StopReason.ERROR)
        return True

    def _on_syscall(self, uc, _ud):
        self._fast_call(fastcall.syscall)

    def _on_sysenter(self, uc, _ud):
        self._fast_call(fastcall.sysenter)

    def _fast_call(self, enter) -> None:
        env = self.env
        try:
            try:
                target = enter(env, self._eflags())
            except CpuFault as fault:
                self._deliver(fault.vector, EXCEPTION, fault.error_code)
                target = env.eip
        except Exception:
            log.exception("%s at RIP %#x failed", enter.__name__, env.eip)
            self.request_stop(StopReason.ERROR)
            target = env.eip
        env.eip = (target - fastcall.INSTRUCTION_LENGTH) & 0xFFFFFFFFFFFFFFFF

    def _on_unmapped(self, uc, access, address, size, value, _ud):
        log.error("guest touched unmapped physical memory at %#x (size %d) at RIP %#x",
                  address, size, self.env.eip)
        return False

    def _deliver(self, vector: int, source: str, error: int, insn_length=0) -> None:
        try:
            self.delivery.deliver(vector, source, error, insn_length)
        except TripleFault:
            log.warning("triple fault at RIP %#x: the processor shuts down", self.env.eip)
            self._triple_fault = True
            self.uc.emu_stop()
        except UnsupportedGuestFeature as error:
            log.error("the guest needs what this accelerator lacks: %s", error)
            self.request_stop(StopReason.ERROR)

    # -- execution -----------------------------------------------------------------------------
    def run(self) -> StopReason:
        env, uc = self.env, self.uc
        while True:
            reason = self._take_stop()
            if reason is not None:
                return reason
            if self._triple_fault:
                self._triple_fault = False
                return StopReason.TRIPLE_FAULT
            if self._dma_written:
                self._purge_dma_writes()
            if self._halted:
                if not self._halt_ends():
                    self._idle()
                    continue
                self._halted = False     # the JIT takes the interrupt before the next instruction
            started = time.monotonic()
            try:
                uc.emu_start(env.eip, NO_UNTIL)
            except Exception as error:   # UcError, or a hook's exception the binding re-raises
                log.error("guest stopped by the JIT at RIP %#x: %s", env.eip, error)
                return StopReason.ERROR
            if self._throttle:
                self._sleep_throttled(time.monotonic() - started)

    def set_throttle(self, share: float) -> None:
        """Keep the vCPU out of the guest for this share of the time (0 to 0.99), so that a guest
        that dirties memory faster than a teleport can send it lets the teleport converge."""
        self._throttle = min(max(float(share), 0.0), 0.99)

    def _sleep_throttled(self, ran: float) -> None:
        pause = ran * self._throttle / (1.0 - self._throttle)
        with self._wake:
            if not self._stop_pending():
                self._wake.wait(min(pause, 0.1))

    def _halt_ends(self) -> bool:
        """Whether the halted processor has something to take: an interrupt it does not mask,
        or an NMI."""
        requests = self.requests
        return (requests.raised(HARD) and bool(self.env.eflags & cs.IF_FLAG)) or \
            (requests.raised(NMI_LINE) and not self.env.hflags2 & cs.HF2_NMI)

    def _idle(self) -> None:
        """HLT: sleep until an interrupt line goes up (the clock thread fires timers), a device
        wrote memory, or a stop is requested."""
        with self._wake:
            if not (self._stop_pending() or self._dma_written or self._halt_ends()):
                self._wake.wait(1.0)

    def _kick(self) -> None:
        self.requests.raise_(ATTENTION)
        with self._wake:
            self._wake.notify_all()

    def _clock_loop(self) -> None:
        """Fire the timers when they are due; their interrupts reach the JIT as request lines.
        A throttled vCPU is also asked to leave the guest every THROTTLE_PERIOD."""
        while not self._closing:
            with self.chip_lock:
                self.chip.advance(time.monotonic_ns())
                self._update_lines()
                deadline = self.chip.next_deadline()
                with self._wake:
                    self._clock_deadline = deadline
            timeout = 0.5 if deadline is None else max(0.0, (deadline - time.monotonic_ns()) / 1e9)
            if self._throttle:
                self.requests.raise_(ATTENTION)
                timeout = min(timeout, THROTTLE_PERIOD)
            with self._wake:
                if self._clock_deadline == deadline:   # no register write moved it earlier since
                    self._wake.wait(min(timeout, 0.5))

    def note_dma(self, ranges) -> None:
        with self._dma_lock:
            self._dma_written.extend(ranges)
        self._kick()               # purge at the next block boundary, from the vCPU thread

    def _purge_dma_writes(self) -> None:
        """Drop translations of code that a device overwrote (the JIT only sees its own stores)."""
        with self._dma_lock:
            ranges, self._dma_written = self._dma_written, []
        for gpa, length in ranges:
            end = gpa + length
            for start, stop, _buf, offset, address in self._ram_slots:
                lo, hi = max(gpa, start), min(end, stop)
                if lo < hi:      # within one mapped block: contiguous RAM addresses
                    self._code.host_range(address + lo - start, hi - lo)

    def set_irq(self, gsi: int, level: bool) -> None:
        with self.chip_lock:
            self.chip.set_irq(gsi, level)
            self._update_lines()

    # -- reset and state -----------------------------------------------------------------------
    def reset(self) -> None:
        uc, env = self.uc, self.env
        uc.reg_write(X.UC_X86_REG_MSR, (0xC0000080, 0))          # EFER: leaves long mode
        uc.reg_write(X.UC_X86_REG_CR4, 0)
        uc.reg_write(X.UC_X86_REG_CR0, 0x60000010)
        uc.reg_write(X.UC_X86_REG_CR3, 0)
        for i in range(16):
            env.regs[i] = 0
        env.regs[2] = 0x600                                         # EDX: processor signature
        data = cs.DESC_P | cs.DESC_S | cs.DESC_W | cs.DESC_A
        code = cs.DESC_P | cs.DESC_S | cs.DESC_CS | (1 << 9) | cs.DESC_A
        env.hflags = 0
        cs.set_eflags(env, 2)
        for seg in (cs.R_ES, cs.R_SS, cs.R_DS, cs.R_FS, cs.R_GS):
            cs.load_segment_cache(env, seg, 0, 0, 0xFFFF, data)
        cs.load_segment_cache(env, cs.R_CS, 0xF000, 0xFFFF0000, 0xFFFF, code)
        env.hflags = cs.HF_ADDSEG | cs.HF_GUEST
        env.hflags2 = 1                                             # GIF: takes interrupts
        env.vm_vmcb, env.intercept = INTERCEPT_AREA, INTERCEPTS
        for table, flags in ((env.ldt, cs.DESC_P | (2 << 8)), (env.tr, cs.DESC_P | (11 << 8))):
            table.selector, table.base, table.limit, table.flags = 0, 0, 0xFFFF, flags
        for table in (env.gdt, env.idt):
            table.base, table.limit = 0, 0xFFFF
        env.cr[2] = 0
        env.eip = 0xFFF0
        for msr in (0x174, 0x175, 0x176, 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084, 0xC0000102):
            uc.reg_write(X.UC_X86_REG_MSR, (msr, 0))
        for i in range(4):
            env.dr[i] = 0
        env.dr[6], env.dr[7] = 0xFFFF0FF0, 0x400
        env.error_code, env.exception_is_int, env.old_exception = 0, 0, -1
        uc.reg_write(X.UC_X86_REG_FPCW, 0x37F)
        uc.reg_write(X.UC_X86_REG_MXCSR, 0x1F80)
        with self.chip_lock:
            self.chip.reset()
            self._update_lines()
        self.memory.bios_rom.buf[:] = self.memory.bios
        self.memory.load_firmware_shadow()
        uc.ctl_flush_tb()       # code pages were rewritten behind the JIT's back
        self._halted = self._triple_fault = False
        self._rep_ins_at.clear()

    def snapshot(self) -> dict:
        env = self.env
        with self.chip_lock:
            chip = self.chip.snapshot(time.monotonic_ns())
        cpu = {
            "env": ctypes.string_at(self.env_address, ENV_RESET_SIZE),
            "halted": self._halted,
            # A readable summary for logs and checks; `env` is what restore uses.
            "rip": env.eip, "rflags": self._eflags(), "cr0": env.cr[0], "cr3": env.cr[3],
            "cr4": env.cr[4], "efer": env.efer, "cs": env.segs[cs.R_CS].selector,
        }
        return {"version": base.SNAPSHOT_VERSION, "accel": self.name, "unicorn": unicorn.__version__,
                "cpus": [cpu], "irqchip": chip}

    def restore(self, state: dict) -> None:
        self._check_snapshot(state)
        if state.get("unicorn") != unicorn.__version__:
            raise EngineError(f"snapshot was taken with Unicorn {state.get('unicorn')}, "
                              f"this host has {unicorn.__version__}")
        cpu = state["cpus"][0]
        raw = cpu["env"]
        if len(raw) != ENV_RESET_SIZE:
            raise EngineError("snapshot processor state has the wrong size")
        ctypes.memmove(self.env_address, raw, ENV_RESET_SIZE)
        self._halted = bool(cpu.get("halted"))
        with self.chip_lock:
            self.chip.restore(state["irqchip"], time.monotonic_ns())
            self._after_chip_change()
        self._rep_ins_at.clear()
        self.uc.ctl_flush_tb()

    def dirty_pages(self) -> bytes:
        """Pages whose bytes differ from the copy kept at the last call (Unicorn has no dirty log)."""
        ram = np.frombuffer(self.memory.ram.buf, dtype=np.uint64)
        pages = self.memory.ram_size // PAGE
        if self._shadow is None:
            self._shadow = ram.copy()
            return np.packbits(np.ones(pages, dtype=bool), bitorder="little").tobytes()
        words = PAGE // 8
        dirty = np.zeros(pages, dtype=bool)
        chunk = 4096  # pages per comparison: bounds the temporary arrays to 16 MiB
        for first in range(0, pages, chunk):
            last = min(pages, first + chunk)
            a = ram[first * words:last * words].reshape(-1, words)
            b = self._shadow[first * words:last * words].reshape(-1, words)
            changed = (a != b).any(axis=1)
            dirty[first:last] = changed
            if changed.any():
                b[changed] = a[changed]
        return np.packbits(dirty, bitorder="little").tobytes()

    def close(self) -> None:
        self._closing = True
        with self._wake:
            self._wake.notify_all()
        self._clock.join(timeout=2)
