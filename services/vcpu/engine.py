"""The accelerator interface: what the vCPU process asks of KVM and of the Unicorn JIT alike.

An engine runs the guest's processors over a GuestMemory, sends port and MMIO accesses to an IoBus,
and owns the interrupt controllers and timers. Everything here is called from the vCPU process."""

from __future__ import annotations

import enum
import logging
import os
import threading
from abc import ABC, abstractmethod
from typing import Protocol

from services.hw.memory import GuestMemory

log = logging.getLogger("headbox.vcpu")

SNAPSHOT_VERSION = 1


class IoBus(Protocol):
    """Where the engine sends the accesses it does not handle itself (ports, MMIO outside RAM)."""

    def pio_read(self, port: int, size: int) -> int: ...
    def pio_write(self, port: int, size: int, value: int) -> None: ...
    def pio_read_string(self, port: int, size: int, count: int) -> bytes: ...
    def pio_write_string(self, port: int, size: int, data: bytes) -> None: ...
    def mmio_read(self, addr: int, size: int) -> int: ...
    def mmio_write(self, addr: int, size: int, value: int) -> None: ...


class StopReason(str, enum.Enum):
    """Why Engine.run() returned."""

    PAUSED = "paused"            # request_stop(PAUSED): state is consistent, run() again resumes
    POWEROFF = "poweroff"        # the platform asked to power off
    RESET = "reset"              # port 0x92 / 0xCF9 / 8042 reset: call reset(), then run()
    TRIPLE_FAULT = "triple-fault"  # the processor shut down; a PC resets on this
    ERROR = "error"              # the accelerator failed; the log says why


class EngineError(Exception):
    """A problem the user can act on (bad configuration, missing /dev/kvm, ...)."""


class Engine(ABC):
    """One accelerator instance: the processors of one VM.

    Thread model: run() is called by the vCPU thread and blocks; request_stop() and set_irq() may
    be called from any thread; reset(), snapshot(), restore(), dirty_pages() only while stopped.
    """

    name: str = "?"

    def __init__(self, memory: GuestMemory, bus: IoBus, cpus: int = 1):
        if cpus < 1:
            raise EngineError("a VM needs at least one CPU")
        self.memory = memory
        self.bus = bus
        self.cpus = cpus
        self._stop_lock = threading.Lock()
        self._stop_reason: StopReason | None = None

    # -- execution ---------------------------------------------------------------------------
    @abstractmethod
    def run(self) -> StopReason:
        """Run the guest until a stop is requested or the platform resets or powers off."""

    def request_stop(self, reason: StopReason = StopReason.PAUSED) -> None:
        """Make run() return `reason` soon. The first request wins until run() returns."""
        with self._stop_lock:
            if self._stop_reason is None or reason in (StopReason.POWEROFF, StopReason.ERROR):
                self._stop_reason = reason
        self._kick()

    def _take_stop(self) -> StopReason | None:
        with self._stop_lock:
            reason, self._stop_reason = self._stop_reason, None
            return reason

    def _stop_pending(self) -> bool:
        return self._stop_reason is not None

    @abstractmethod
    def _kick(self) -> None:
        """Get every vCPU out of guest code promptly (from any thread)."""

    @abstractmethod
    def reset(self) -> None:
        """Power-on state for processors and interrupt controllers; firmware shadow reloaded."""

    # -- interrupts --------------------------------------------------------------------------
    @abstractmethod
    def set_irq(self, gsi: int, level: bool) -> None:
        """Drive an interrupt line (ISA IRQs 0-15 reach PIC and IO-APIC, 16-23 the IO-APIC)."""

    def note_dma(self, ranges) -> None:
        """A device wrote guest RAM behind the processor's back: [(gpa, length), ...].

        Called from any thread, before the device's completion interrupt or reply; a JIT must not
        run code translated from the old bytes."""

    def cpu_features(self) -> dict[str, int]:
        """The CPUID feature registers the guest sees (services/hw/cpuid.py: features())."""
        return {}

    def set_throttle(self, share: float) -> None:
        """Keep the vCPUs out of the guest for this share of the time (0 to 0.99): a teleport's
        auto-converge. Accelerators without it keep the guest at full speed."""

    # -- state -------------------------------------------------------------------------------
    @abstractmethod
    def snapshot(self) -> dict:
        """Processor and interrupt-controller state as msgpack-able plain data (while stopped)."""

    @abstractmethod
    def restore(self, state: dict) -> None:
        """Load a snapshot taken by the same accelerator (while stopped)."""

    @abstractmethod
    def dirty_pages(self) -> bytes:
        """Bitmap, one bit per 4 KiB page of the RAM region, of pages written since the last call.

        The first call after creation reports every page dirty."""

    def close(self) -> None:
        pass

    def _check_snapshot(self, state: dict) -> None:
        if state.get("version") != SNAPSHOT_VERSION:
            raise EngineError(f"snapshot version {state.get('version')} is not {SNAPSHOT_VERSION}")
        if state.get("accel") != self.name:
            raise EngineError(
                f"snapshot was taken on the {state.get('accel')} accelerator, this VM runs {self.name}")
        if len(state.get("cpus", ())) != self.cpus:
            raise EngineError(f"snapshot has {len(state.get('cpus', ()))} CPUs, this VM has {self.cpus}")


def host_has_hardware_virtualization() -> tuple[bool, str]:
    """Whether /dev/kvm is backed by VT-x/AMD-V (fast) rather than a software nested hypervisor."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    if "vmx" not in flags and "svm" not in flags:
        mods = ""
        try:
            with open("/proc/modules") as f:
                mods = " ".join(line.split()[0] for line in f if line.startswith("kvm"))
        except OSError:
            pass
        return False, f"the host CPU has no vmx/svm flag (/dev/kvm is {mods or 'not hardware KVM'})"
    return True, "the host CPU has hardware virtualization (" + ("vmx" if "vmx" in flags else "svm") + ")"


def choose_accelerator(requested: str = "auto") -> tuple[str, str]:
    """('kvm'|'tcg', why). `auto` picks kvm only on real hardware virtualization."""
    if requested not in ("auto", "kvm", "tcg"):
        raise EngineError(f"unknown accelerator '{requested}' (expected kvm, tcg or auto)")
    if requested == "tcg":
        return "tcg", "tcg was requested"
    ok, why = host_has_hardware_virtualization()
    if requested == "kvm":
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise EngineError(f"kvm was requested but {why}")
        return "kvm", "kvm was requested" + ("" if ok else f" ({why}; it will be slow)")
    return ("kvm", why) if ok else ("tcg", why + "; using the software JIT")


def create_engine(accel: str, memory: GuestMemory, bus: IoBus, cpus: int = 1, **options) -> Engine:
    if accel == "kvm":
        from services.vcpu.kvm.engine import KvmEngine
        return KvmEngine(memory, bus, cpus, **options)
    if accel == "tcg":
        from services.vcpu.tcg.engine import TcgEngine
        return TcgEngine(memory, bus, cpus, **options)
    raise EngineError(f"unknown accelerator '{accel}'")
