"""The /dev/kvm handle: API version, capabilities, and the host-wide lists (CPUID, MSR indices).

One instance per engine; it creates the VM fd (vm.py) and is closed with the engine."""

from __future__ import annotations

import errno
import os

from services.vcpu.engine import EngineError
from services.vcpu.kvm import ioctl as k

# Capabilities this engine cannot work without (research §0.2 lists what the dev machine offers).
REQUIRED_CAPS = {
    k.KVM_CAP_IRQCHIP: "in-kernel irqchip",
    k.KVM_CAP_PIT2: "in-kernel PIT",
    k.KVM_CAP_IRQ_ROUTING: "GSI routing",
    k.KVM_CAP_SET_TSS_ADDR: "KVM_SET_TSS_ADDR",
    k.KVM_CAP_SET_IDENTITY_MAP_ADDR: "KVM_SET_IDENTITY_MAP_ADDR",
    k.KVM_CAP_READONLY_MEM: "read-only memory slots",
    k.KVM_CAP_IMMEDIATE_EXIT: "immediate_exit",
    k.KVM_CAP_VCPU_EVENTS: "vCPU events",
}


class KvmSystem:
    def __init__(self, path: str = "/dev/kvm"):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise EngineError(f"cannot open {path}: {e.strerror} (is the kvm module loaded and "
                              f"are you in the kvm group?)") from None
        try:
            self._check()
        except BaseException:
            self.close()
            raise

    def _check(self) -> None:
        version = k.ioctl(self.fd, k.KVM_GET_API_VERSION)
        if version != k.KVM_API_VERSION:
            raise EngineError(f"/dev/kvm speaks API version {version}, this engine needs {k.KVM_API_VERSION}")
        missing = [name for cap, name in REQUIRED_CAPS.items() if not self.check_extension(cap)]
        if missing:
            raise EngineError("/dev/kvm lacks " + ", ".join(missing))

    def check_extension(self, cap: int) -> int:
        return k.ioctl(self.fd, k.KVM_CHECK_EXTENSION, cap)

    def vcpu_mmap_size(self) -> int:
        return k.ioctl(self.fd, k.KVM_GET_VCPU_MMAP_SIZE)

    def supported_cpuid(self) -> list[k.KvmCpuidEntry2]:
        """KVM_GET_SUPPORTED_CPUID, growing the buffer while the kernel answers E2BIG (research §1.4)."""
        n = 64
        while True:
            buf = k.cpuid2_type(n)(nent=n)
            ret, err = k.ioctl_raw(self.fd, k.KVM_GET_SUPPORTED_CPUID, buf)
            if ret >= 0:
                return [k.KvmCpuidEntry2.from_buffer_copy(buf.entries[i]) for i in range(buf.nent)]
            if err != errno.E2BIG or n >= 4096:
                raise OSError(err, f"KVM_GET_SUPPORTED_CPUID: {os.strerror(err)}")
            n *= 2

    def msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST: first call with room for none learns the count (E2BIG)."""
        probe = k.msr_list_type(0)(nmsrs=0)
        k.ioctl_raw(self.fd, k.KVM_GET_MSR_INDEX_LIST, probe)
        buf = k.msr_list_type(probe.nmsrs)(nmsrs=probe.nmsrs)
        k.ioctl(self.fd, k.KVM_GET_MSR_INDEX_LIST, buf)
        return list(buf.indices[:buf.nmsrs])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
