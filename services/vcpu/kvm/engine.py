"""KvmEngine: the accelerator on /dev/kvm, one host thread per vCPU, in-kernel irqchip and PIT.

It builds the VM in research/vmm.md §1.4's order and coordinates the vCPU threads: run, kick, stop,
reset, snapshot/restore (§1.9) and the RAM dirty bitmap (§1.8)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading

import numpy as np

from services.hw import cpuid
from services.hw.memory import ISA_BIOS_SIZE, PAGE, SHADOW_END, GuestMemory
from services.vcpu.engine import (
    SNAPSHOT_VERSION,
    Engine,
    EngineError,
    IoBus,
    StopReason,
)
from services.vcpu.kvm import ioctl as k
from services.vcpu.kvm.cpuid import CpuidOverrides, read_leaf, vcpu_cpuid
from services.vcpu.kvm.exits import handle_exit
from services.vcpu.kvm.system import KvmSystem
from services.vcpu.kvm.vcpu import EXTRA_MSRS, Vcpu
from services.vcpu.kvm.vm import IRQCHIPS, Vm

log = logging.getLogger("headbox.vcpu.kvm")

KICK_SIGNAL = signal.SIGUSR1


def _ignore_kick(signum, frame) -> None:
    """Runs later in the main thread; its only purpose is that the signal interrupts KVM_RUN."""


def _install_kick_handler() -> None:
    # A Python-level handler makes CPython's C handler catch the signal, so a blocked KVM_RUN in the
    # signalled thread returns EINTR (research §1.7). Only the main thread may install handlers.
    if threading.current_thread() is not threading.main_thread():
        raise EngineError("the KVM engine must be created in the process's main thread "
                          "(it installs the SIGUSR1 handler that stops vCPUs)")
    if not callable(signal.getsignal(KICK_SIGNAL)):
        signal.signal(KICK_SIGNAL, _ignore_kick)


class KvmEngine(Engine):
    name = "kvm"

    def __init__(self, memory: GuestMemory, bus: IoBus, cpus: int = 1, *,
                 cpuid_overrides: CpuidOverrides | None = None, device: str = "/dev/kvm",
                 cpuid_values: dict | None = None):
        super().__init__(memory, bus, cpus)
        _install_kick_handler()
        self.vm: Vm | None = None
        self.vcpus: list[Vcpu] = []
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._epoch = 0          # bumped by run(): each vCPU thread runs once per epoch
        self._active = 0         # vCPU threads still inside the current epoch
        self._closing = False
        self._dirty_logging = False
        self._host_dirty: list[tuple[int, int]] = []   # RAM ranges we wrote ourselves (KVM cannot see)
        self._system = KvmSystem(device)
        self._cpuid_values = cpuid_values or {}
        self._guest_cpuid: list = []
        try:
            self._build(cpuid_overrides)
        except BaseException:
            self.close()
            raise

    def cpu_features(self) -> dict[str, int]:
        return cpuid.features(lambda leaf: read_leaf(self._guest_cpuid, leaf))

    # -- construction (research §1.4) -------------------------------------------------------------
    def _build(self, cpuid_overrides: CpuidOverrides | None) -> None:
        system = self._system
        max_vcpus = system.check_extension(k.KVM_CAP_MAX_VCPUS)
        if self.cpus > max_vcpus:
            raise EngineError(f"this host's KVM supports at most {max_vcpus} CPUs per VM, not {self.cpus}")
        self.vm = Vm(system.fd)
        self.vm.set_system_addresses()
        self.vm.create_irqchip_and_pit()      # before any vCPU
        for slot in self.memory.slots():
            self.vm.add_slot(slot)
        self._create_vcpus(system.supported_cpuid(), cpuid_overrides)
        # There is no reset ioctl: keep the power-on state to re-apply (research §1.4 step 7).
        self._power_on = self._save_all()

    def _create_vcpus(self, supported, cpuid_overrides) -> None:
        system = self._system
        xsave_size = 0
        if system.check_extension(k.KVM_CAP_XSAVE):
            xsave_size = max(system.check_extension(k.KVM_CAP_XSAVE2), 4096)
        has_xcrs = bool(system.check_extension(k.KVM_CAP_XCRS))
        mmap_size = system.vcpu_mmap_size()
        for index in range(self.cpus):
            vcpu = Vcpu(self.vm.fd, index, mmap_size, xsave_size=xsave_size, has_xcrs=has_xcrs)
            self.vcpus.append(vcpu)
            table = vcpu_cpuid(supported, index, cpuid_overrides, self._cpuid_values)
            vcpu.set_cpuid(table)
            if index == 0:
                self._guest_cpuid = table
        msrs = self.vcpus[0].probe_msrs(system.msr_index_list() + EXTRA_MSRS)
        for vcpu in self.vcpus:
            vcpu.msr_indices = msrs

    def _start_threads(self) -> None:
        if self._threads:
            return
        for vcpu in self.vcpus:
            thread = threading.Thread(target=self._vcpu_thread, args=(vcpu,), name=f"kvm-vcpu{vcpu.index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    # -- execution --------------------------------------------------------------------------------
    def run(self) -> StopReason:
        self._start_threads()
        with self._cond:
            for vcpu in self.vcpus:
                vcpu.run_page.immediate_exit = 0   # before the threads look at the stop request
            self._active = len(self.vcpus)
            self._epoch += 1
            self._cond.notify_all()
            try:
                self._wait_idle()
            except BaseException:   # e.g. KeyboardInterrupt: never leave vCPUs running behind us
                self.request_stop(StopReason.PAUSED)
                self._wait_idle()
                raise
        return self._take_stop() or StopReason.PAUSED

    def _wait_idle(self) -> None:
        while self._active:
            self._cond.wait()

    def _vcpu_thread(self, vcpu: Vcpu) -> None:
        epoch = 0
        while True:
            with self._cond:
                while self._epoch == epoch and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                epoch = self._epoch
            try:
                self._run_vcpu(vcpu)
            except Exception:
                log.exception("vCPU %d: exit handling failed", vcpu.index)
                self.request_stop(StopReason.ERROR)
            finally:
                vcpu.complete_pending_io()   # snapshots need the last IN/MMIO read completed
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()

    def _run_vcpu(self, vcpu: Vcpu) -> None:
        while not self._stop_pending():
            err = vcpu.run()
            if err in (errno.EINTR, errno.EAGAIN):
                # EINTR: kicked (or a stray signal), look at the stop request again. EAGAIN: an AP
                # waiting for INIT/SIPI was woken up; KVM wants KVM_RUN again (x86.c, QEMU retries too).
                continue
            if err:
                log.error("vCPU %d: KVM_RUN failed: %s", vcpu.index, os.strerror(err))
                self.request_stop(StopReason.ERROR)
                return
            reason = handle_exit(vcpu, self.vm, self.bus)
            if reason is not None:
                self.request_stop(reason)
                return

    def _kick(self) -> None:
        # immediate_exit first, then the signal: a signal that lands just before KVM_RUN is caught by
        # the flag (research §1.7).
        with self._cond:
            if self._closing:
                return
            for vcpu in self.vcpus:
                vcpu.run_page.immediate_exit = 1
            for thread in self._threads:
                signal.pthread_kill(thread.ident, KICK_SIGNAL)

    def _require_stopped(self, what: str) -> None:
        if self._active:
            raise EngineError(f"{what} needs a stopped VM: call request_stop() and wait for run() to return")

    # -- interrupts -------------------------------------------------------------------------------
    def set_irq(self, gsi: int, level: bool) -> None:
        vm = self.vm
        if vm is not None:   # a device may still raise a line while the VM is being closed
            vm.irq_line(gsi, level)

    # -- state ------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._require_stopped("reset()")
        for vcpu, state in zip(self.vcpus, self._power_on["cpus"]):
            vcpu.load(state, with_cpuid=False)
        self._load_irqchips(self._power_on)
        self.memory.load_firmware_shadow()
        # The dirty log only sees guest writes (research §1.8): report the reloaded shadow ourselves.
        shadow = min(len(self.memory.bios), ISA_BIOS_SIZE)
        self._host_dirty.append((SHADOW_END - shadow, shadow))

    def snapshot(self) -> dict:
        self._require_stopped("snapshot()")
        state = self._save_all()
        state["clock"] = self.vm.get_clock()
        return state

    def _save_all(self) -> dict:
        return {
            "version": SNAPSHOT_VERSION,
            "accel": self.name,
            "cpus": [vcpu.save() for vcpu in self.vcpus],
            "irqchip": {name: self.vm.get_irqchip(chip) for name, chip in IRQCHIPS.items()},
            "pit": self.vm.get_pit(),
        }

    def restore(self, state: dict) -> None:
        self._require_stopped("restore()")
        self._check_snapshot(state)
        # Interrupt controllers first (Firecracker restores VM state before vCPUs), vCPUs in §1.9's
        # order, the kvmclock last as QEMU does when the VM resumes (hw/i386/kvm/clock.c).
        self._load_irqchips(state)
        for vcpu, cpu_state in zip(self.vcpus, state["cpus"]):
            vcpu.load(cpu_state)
        self.vm.set_clock(state["clock"])

    def _load_irqchips(self, state: dict) -> None:
        for name in IRQCHIPS:
            self.vm.set_irqchip(state["irqchip"][name])
        self.vm.set_pit(state["pit"])

    def dirty_pages(self) -> bytes:
        """Logging starts on the first call, which reports every page: until then nothing was tracked,
        and VMs that never migrate do not pay for write-protection faults."""
        self._require_stopped("dirty_pages()")
        ram = self.memory.ram
        pages = ram.size // PAGE
        if not self._dirty_logging:
            self.vm.enable_dirty_log(ram)
            self._dirty_logging = True
            self._host_dirty = []
            return np.packbits(np.ones(pages, np.uint8), bitorder="little").tobytes()
        bits = np.zeros(pages, np.uint8)
        for index, (slot, _) in enumerate(self.vm.slots):
            if slot.region is not ram:
                continue
            # KVM's bitmap is u64 words, bit n = page n: little-endian bytes keep that bit order.
            log_bits = np.unpackbits(np.frombuffer(self.vm.dirty_log(index), np.uint8), bitorder="little")
            first, count = slot.offset // PAGE, slot.size // PAGE
            bits[first:first + count] |= log_bits[:count]
        for offset, size in self._host_dirty:
            bits[offset // PAGE:(offset + size + PAGE - 1) // PAGE] = 1
        self._host_dirty = []
        return np.packbits(bits, bitorder="little").tobytes()

    # -- teardown -----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._active:
            self.request_stop(StopReason.PAUSED)
            with self._cond:
                self._wait_idle()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads = []
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus = []
        if self.vm is not None:
            self.vm.close()
            self.vm = None
        self._system.close()
