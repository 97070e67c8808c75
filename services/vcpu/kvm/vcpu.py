"""One KVM vCPU fd: its kvm_run page, KVM_RUN, and its architectural state as plain data.

State is saved and restored in the order of research/vmm.md §1.9 (Firecracker's rules, QEMU-consistent)."""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os

from services.vcpu.engine import EngineError
from services.vcpu.kvm import cpuid as cpuid_table
from services.vcpu.kvm import ioctl as k

log = logging.getLogger("headbox.vcpu.kvm")

MSR_IA32_TSC = 0x10
MSR_IA32_TSC_DEADLINE = 0x6E0

# MSRs worth saving that KVM_GET_MSR_INDEX_LIST may omit (QEMU adds the MTRRs itself); research §1.9's
# core set. Each is kept only if KVM_GET_MSRS succeeds on it.
EXTRA_MSRS = ([0x10, 0x3B, 0x174, 0x175, 0x176, 0x1A0, 0x277, 0x2FF, 0x250, 0x258, 0x259]
              + list(range(0x200, 0x210)) + list(range(0x268, 0x270))
              + [0x6E0, 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084, 0xC0000102, 0xC0000103,
                 0x4B564D00, 0x4B564D01, 0x4B564D02, 0x4B564D03, 0x4B564D04])


class Vcpu:
    def __init__(self, vm_fd: int, index: int, mmap_size: int, *, xsave_size: int, has_xcrs: bool):
        self.index = index
        self.fd = k.ioctl(vm_fd, k.KVM_CREATE_VCPU, index)   # vCPU id = APIC ID (research §1.1)
        self.xsave_size = xsave_size
        self.has_xcrs = has_xcrs
        self.msr_indices: list[int] = []
        self.cpuid: list[k.KvmCpuidEntry2] = []
        self.has_run = False
        self._mmap = mmap.mmap(self.fd, mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.run_page = k.KvmRun.from_buffer(self._mmap)

    # -- execution -------------------------------------------------------------------------------
    def run(self) -> int:
        """KVM_RUN; returns 0 or the errno (EINTR when kicked)."""
        self.has_run = True
        ret, err = k.ioctl_raw(self.fd, k.KVM_RUN)
        return err if ret < 0 else 0

    def complete_pending_io(self) -> None:
        """Re-enter with immediate_exit=1 so a pending IN/MMIO read lands in the registers without
        running guest code (research §1.3, vcpu_run_complete_io)."""
        self.run_page.immediate_exit = 1
        err = self.run()
        if err not in (0, errno.EINTR):
            log.warning("vCPU %d: completing pending I/O failed: %s", self.index, os.strerror(err))

    def io_data(self, offset: int, length: int) -> bytes:
        return self._mmap[offset:offset + length]

    def set_io_data(self, offset: int, data: bytes) -> None:
        self._mmap[offset:offset + len(data)] = data

    # -- CPUID and MSR discovery -----------------------------------------------------------------
    def set_cpuid(self, entries: list[k.KvmCpuidEntry2]) -> None:
        table = cpuid_table.to_struct(entries)
        try:
            k.ioctl(self.fd, k.KVM_SET_CPUID2, table)
        except OSError as e:
            if self.has_run:
                # KVM only accepts an identical table once the vCPU has run (EINVAL/EBUSY otherwise).
                raise EngineError("the snapshot's CPUID differs from this VM's and KVM cannot change it "
                                  "after the vCPU ran; restore into a freshly started VM") from None
            raise EngineError(f"KVM refused the CPUID table of vCPU {self.index}: {e.strerror}") from None
        self.cpuid = entries

    def probe_msrs(self, candidates: list[int]) -> list[int]:
        """The candidates KVM_GET_MSRS can read on this vCPU (research §1.9: filter the index list)."""
        readable = []
        for index in dict.fromkeys(candidates):
            if self._get_msrs([index]) is not None:
                readable.append(index)
        return readable

    def _get_msrs(self, indices: list[int]) -> list[tuple[int, int]] | None:
        buf = k.msrs_type(len(indices))(nmsrs=len(indices))
        for i, index in enumerate(indices):
            buf.entries[i].index = index
        ret, _ = k.ioctl_raw(self.fd, k.KVM_GET_MSRS, buf)
        if ret != len(indices):
            return None
        return [(e.index, e.data) for e in buf.entries]

    # -- state, save order: research §1.9 --------------------------------------------------------
    def save(self) -> dict:
        return {
            "mp_state": self._get(k.KVM_GET_MP_STATE, k.KvmMpState).mp_state,  # first: accepts APIC events
            "regs": bytes(self._get(k.KVM_GET_REGS, k.KvmRegs)),
            "sregs": bytes(self._get(k.KVM_GET_SREGS, k.KvmSregs)),
            "xsave": self._get_xsave(),
            "xcrs": bytes(self._get(k.KVM_GET_XCRS, k.KvmXcrs)) if self.has_xcrs else b"",
            "debugregs": bytes(self._get(k.KVM_GET_DEBUGREGS, k.KvmDebugregs)),
            "lapic": bytes(self._get(k.KVM_GET_LAPIC, k.KvmLapicState)),
            "tsc_khz": self._tsc_khz(),
            "cpuid": cpuid_table.to_data(self.cpuid),
            "msrs": [list(pair) for pair in self._save_msrs()],
            "events": bytes(self._get(k.KVM_GET_VCPU_EVENTS, k.KvmVcpuEvents)),  # last
        }

    def _get(self, request: int, ctype):
        value = ctype()
        k.ioctl(self.fd, request, value)
        return value

    def _get_xsave(self) -> bytes:
        if not self.xsave_size:
            return bytes(self._get(k.KVM_GET_FPU, k.KvmFpu))
        if self.xsave_size > ctypes.sizeof(k.KvmXsave):
            # The header's size is fixed at 4 KiB; the kernel fills KVM_CAP_XSAVE2 bytes (research §1.1).
            buf = (ctypes.c_char * self.xsave_size)()
            k.ioctl(self.fd, k.KVM_GET_XSAVE2, buf)
            return bytes(buf)
        return bytes(self._get(k.KVM_GET_XSAVE, k.KvmXsave))

    def _tsc_khz(self) -> int:
        ret, _ = k.ioctl_raw(self.fd, k.KVM_GET_TSC_KHZ)
        return max(ret, 0)

    def _save_msrs(self) -> list[tuple[int, int]]:
        pairs = []
        for start in range(0, len(self.msr_indices), k.MAX_IO_MSRS):
            chunk = self.msr_indices[start:start + k.MAX_IO_MSRS]
            values = self._get_msrs(chunk)
            if values is None:
                raise EngineError(f"vCPU {self.index}: KVM_GET_MSRS failed on a probed MSR list")
            pairs += values
        return pairs

    # -- state, restore order: research §1.9 -----------------------------------------------------
    def load(self, state: dict, *, with_cpuid: bool = True) -> None:
        # Set only when different: the kernel compares against its runtime-updated copy (OSXSAVE, APIC
        # bits) and refuses even our own table once the vCPU has run.
        if with_cpuid and state["cpuid"] != cpuid_table.to_data(self.cpuid):
            self.set_cpuid(cpuid_table.from_data(state["cpuid"]))
        self._set(k.KVM_SET_MP_STATE, k.KvmMpState(mp_state=state["mp_state"]))
        self._set(k.KVM_SET_REGS, k.KvmRegs.from_buffer_copy(state["regs"]))
        self._set(k.KVM_SET_SREGS, k.KvmSregs.from_buffer_copy(state["sregs"]))  # APIC base, before LAPIC
        self._set_xsave(state["xsave"])
        if self.has_xcrs and state["xcrs"]:
            self._set(k.KVM_SET_XCRS, k.KvmXcrs.from_buffer_copy(state["xcrs"]))
        self._set(k.KVM_SET_DEBUGREGS, k.KvmDebugregs.from_buffer_copy(state["debugregs"]))
        self._set(k.KVM_SET_LAPIC, k.KvmLapicState.from_buffer_copy(state["lapic"]))  # before MSRs
        self._load_msrs([tuple(pair) for pair in state["msrs"]])
        events = k.KvmVcpuEvents.from_buffer_copy(state["events"])
        events.flags |= k.KVM_VCPUEVENT_VALID_SIPI_VECTOR   # an AP waiting for SIPI keeps its vector
        self._set(k.KVM_SET_VCPU_EVENTS, events)
        # Tell a kvmclock guest it was paused (no soft-lockup warnings); EINVAL if it has no kvmclock.
        k.ioctl_raw(self.fd, k.KVM_KVMCLOCK_CTRL)

    def _set(self, request: int, value) -> None:
        k.ioctl(self.fd, request, value)

    def _set_xsave(self, data: bytes) -> None:
        if not self.xsave_size:
            self._set(k.KVM_SET_FPU, k.KvmFpu.from_buffer_copy(data))
            return
        if len(data) != self.xsave_size:
            raise EngineError(f"saved XSAVE area is {len(data)} bytes, this host's is {self.xsave_size}")
        buf = (ctypes.c_char * len(data)).from_buffer_copy(data)
        k.ioctl(self.fd, k.KVM_SET_XSAVE, buf)

    def _load_msrs(self, pairs: list[tuple[int, int]]) -> None:
        # IA32_TSC first; TSC_DEADLINE alone in a last chunk, once TSC and the LAPIC are in place
        # (research §1.9, Firecracker's ordering).
        first = [p for p in pairs if p[0] == MSR_IA32_TSC]
        last = [p for p in pairs if p[0] == MSR_IA32_TSC_DEADLINE]
        middle = [p for p in pairs if p[0] not in (MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE)]
        ordered = first + middle
        for start in range(0, len(ordered), k.MAX_IO_MSRS):
            self._set_msr_chunk(ordered[start:start + k.MAX_IO_MSRS])
        self._set_msr_chunk(last)

    def _set_msr_chunk(self, pairs: list[tuple[int, int]]) -> None:
        while pairs:
            buf = k.msrs_type(len(pairs))(nmsrs=len(pairs))
            for i, (index, value) in enumerate(pairs):
                buf.entries[i].index, buf.entries[i].data = index, value
            done = k.ioctl(self.fd, k.KVM_SET_MSRS, buf)
            if done >= len(pairs):
                return
            # SET_MSRS stops at the first MSR it rejects: report it and carry on after it.
            log.warning("vCPU %d: MSR %#x=%#x not restored", self.index, *pairs[done])
            pairs = pairs[done + 1:]

    # -- teardown ----------------------------------------------------------------------------------
    def close(self) -> None:
        if self.fd < 0:
            return
        del self.run_page   # the ctypes view pins the mapping
        self._mmap.close()
        os.close(self.fd)
        self.fd = -1
