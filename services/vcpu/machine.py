"""One VM as the vCPU process holds it: RAM, firmware, the chosen accelerator and the platform
devices that live beside the processors; platform resets and triple faults are handled here."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from services.devices.platform import build_platform
from services.ipc.naming import shm_name
from services.ipc.shm import SharedRegion
from services.vcpu.engine import EngineError, StopReason, choose_accelerator, create_engine
from services.vcpu.memory import MiB, GuestMemory

log = logging.getLogger("headbox.vcpu")

DEFAULT_FIRMWARE = "/usr/share/seabios/bios.bin"
MACHINE_STATE_VERSION = 1


@dataclass
class MachineConfig:
    vm_id: str
    ram_mib: int = 128
    cpus: int = 1
    accel: str = "auto"
    firmware: str = DEFAULT_FIRMWARE
    boot_order: tuple[str, ...] = ("dvd", "disk")
    exit_port: int | None = None            # the test-exit device, for test programs only
    engine_options: dict = field(default_factory=dict)


def host_ram_available() -> int:
    """Bytes the host can still give (MemAvailable), or 0 when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def load_firmware(path: str) -> bytes:
    if not os.path.exists(path):
        raise EngineError(f"no firmware at {path}: install Debian's seabios package (scripts/setup does)")
    with open(path, "rb") as f:
        image = f.read()
    if not image or len(image) % (64 << 10):
        raise EngineError(f"{path} is not a firmware image (its size must be a multiple of 64 KiB)")
    return image


class Machine:
    """RAM (a named shared-memory region), firmware, platform devices and the engine of one VM."""

    def __init__(self, config: MachineConfig, *, debug_sink=None, ram: SharedRegion | None = None,
                 firmware: bytes | None = None, device_bus=None):
        """`device_bus` (an IoBus: the io channel to the device process) gets every port and MMIO
        access that the platform devices hosted here do not claim."""
        self.config = config
        self.accel, self.accel_reason = choose_accelerator(config.accel)
        log.info("accelerator: %s (%s)", self.accel, self.accel_reason)
        image = firmware if firmware is not None else load_firmware(config.firmware)
        if ram is None:
            size = config.ram_mib * MiB
            available = host_ram_available()
            if available and size > available:
                raise EngineError(f"{config.ram_mib} MiB of RAM asked for, but the host has only "
                                  f"{available // MiB} MiB available")
            ram = SharedRegion.create(shm_name(config.vm_id, "ram"), size)
            self._owns_ram = True
        else:
            self._owns_ram = False
        self.ram = ram
        try:
            self.memory = GuestMemory(ram, image)
            self.memory.load_firmware_shadow()
            self.engine = None
            self.bus = build_platform(
                self.memory, cpus=config.cpus, boot_order=config.boot_order, debug_sink=debug_sink,
                uuid=None, exit_port=config.exit_port, fallback=device_bus,
                reset=lambda: self.engine.request_stop(StopReason.RESET),
                poweroff=lambda: self.engine.request_stop(StopReason.POWEROFF))
            self.engine = create_engine(self.accel, self.memory, self.bus, config.cpus, **config.engine_options)
        except BaseException:
            self._release_ram()
            raise

    def run(self) -> StopReason:
        """Run until paused, powered off or failed; resets (guest-initiated or triple fault) are
        carried out here, as a PC's reset line would."""
        while True:
            reason = self.engine.run()
            if reason in (StopReason.RESET, StopReason.TRIPLE_FAULT):
                log.info("platform reset (%s)", reason.value)
                self.reset()
                continue
            return reason

    def reset(self) -> None:
        self.bus.reset()
        self.engine.reset()

    def snapshot(self) -> dict:
        return {"version": MACHINE_STATE_VERSION, "engine": self.engine.snapshot(),
                "platform": self.bus.snapshot()}

    def restore(self, state: dict) -> None:
        if state.get("version") != MACHINE_STATE_VERSION:
            raise EngineError(f"machine state version {state.get('version')} is not {MACHINE_STATE_VERSION}")
        self.engine.restore(state["engine"])
        self.bus.restore(state["platform"])

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self._release_ram()

    def _release_ram(self) -> None:
        if self._owns_ram:
            self.ram.close()
            self.ram.unlink()
            self._owns_ram = False
