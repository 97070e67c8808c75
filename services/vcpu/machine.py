"""One VM as the vCPU process holds it: RAM, firmware, the chosen accelerator and the platform
devices that live beside the processors; platform resets and triple faults are handled here."""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from services.hw.display.lfb import LinearFramebuffer
from services.hw.display.surface import DisplaySurface
from services.hw.display.vga import StdVga
from services.hw.display.vgabios import install_vgabios
from services.hw.memory import GuestMemory, MiB
from services.hw.page_sets import merge_pages
from services.hw.storage.ide.pci import IDE_FUNCTION, IDE_SLOT, PiixIdeFunction
from services.ipc.naming import RAM, SURFACE, VRAM, shm_name
from services.ipc.shm import PrivateRegion, SharedRegion, sweep_stale
from services.ipc.spec import LaunchSpec
from services.ipc.surface import REGION_SIZE
from services.vcpu.engine import (
    EngineError,
    StopReason,
    choose_accelerator,
    create_engine,
)
from services.vcpu.network import NetworkCards
from services.vcpu.platform import build_platform
from services.vcpu.remote_pci import RemotePciFunction
from services.vcpu.write_tracker import PAGE, WriteTracker

log = logging.getLogger("headbox.vcpu")

MACHINE_STATE_VERSION = 1


VGA_SLOT = 2


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

    def __init__(self, spec: LaunchSpec, *, debug_sink=None, ram: SharedRegion | None = None,
                 firmware: bytes | None = None, device_bus=None, vga: bool = True):
        """`device_bus` (an IoBus: the io channel to the device process) gets every port and MMIO
        access that the platform devices hosted here do not claim."""
        self.spec = spec
        self.accel, self.accel_reason = choose_accelerator(spec.accel)
        log.info("accelerator: %s (%s)", self.accel, self.accel_reason)
        image = firmware if firmware is not None else load_firmware(spec.firmware)
        if ram is None:
            stale = sweep_stale()
            if stale:
                log.info("removed %d shared-memory regions left by VMs that were killed", len(stale))
            size = spec.memory_mib * MiB
            available = host_ram_available()
            if available and size > available:
                raise EngineError(f"{spec.memory_mib} MiB of RAM asked for, but the host has only "
                                  f"{available // MiB} MiB available")
            ram = SharedRegion.create(shm_name(spec.vm_id, RAM), size)
            self._owns_ram = True
        else:
            self._owns_ram = False
        self.ram = ram
        self.device_bus = device_bus
        self.vga = self.surface = None
        self.display_lock = threading.Lock()     # one renderer at a time: publisher or screenshot
        self._regions: list = []
        self._trackers: dict = {}         # area name -> WriteTracker, while a teleport looks
        self._dma_written: list = []      # device DMA into RAM since the last written_pages("ram")
        try:
            self.memory = GuestMemory(ram, image)
            self.memory.load_firmware_shadow()
            self.engine = None
            self.bus = build_platform(
                self.memory, cpus=spec.cpus, boot_order=spec.boot, debug_sink=debug_sink,
                uuid=None, exit_port=spec.exit_port, fallback=device_bus, acpi=spec.acpi,
                set_irq=lambda line, level: self.engine.set_irq(line, level),
                reset=lambda: self.engine.request_stop(StopReason.RESET),
                poweroff=lambda: self.engine.request_stop(StopReason.POWEROFF))
            self._add_disk_controller()
            self.network = NetworkCards(spec.nics, self.memory, self.bus,
                                        lambda name, size: self._region(name, size, True),
                                        lambda ranges: self.note_dma(ranges))
            if vga:
                self._add_vga()
            overrides = {int(leaf): tuple(regs) for leaf, *regs in spec.cpuid}
            self.engine = create_engine(self.accel, self.memory, self.bus, spec.cpus, cpuid_values=overrides)
            if device_bus is not None:
                device_bus.on_dma = self.note_dma
        except BaseException:
            self._release_ram()
            raise

    def _region(self, name: str, size: int, shared: bool):
        region = SharedRegion.create(shm_name(self.spec.vm_id, name), size) if shared else PrivateRegion(size)
        self._regions.append(region)
        return region

    def _add_disk_controller(self) -> None:
        """The IDE function's configuration space lives here; its device in the device process."""
        model = self.spec.ide_controller
        if model is None:
            return
        function = PiixIdeFunction(model)
        if self.device_bus is not None:
            function = RemotePciFunction(function, IDE_SLOT, IDE_FUNCTION, self.device_bus)
        self.bus.device("pci").root.add(function, IDE_SLOT, IDE_FUNCTION)

    def _add_vga(self) -> None:
        """Standard VGA beside the vCPUs: its register traffic is too dense for a round trip each
        (SeaVGABIOS's mode set alone is ~20k port accesses, research/vmm.md §0.2)."""
        shared = self._owns_ram
        vram = self._region(VRAM, self.spec.vram_mib * MiB, shared)
        self.vga = StdVga(vram)
        self.vga.attach(self.bus)
        self._lfb = LinearFramebuffer(vram)
        function = self.vga.pci_function(on_lfb_change=self._move_lfb, on_mmio_change=self._move_vga_mmio)
        self.bus.device("pci").root.add(function, VGA_SLOT)
        self._vga_mmio = function.mmio
        install_vgabios(self.bus.device("fw_cfg"))
        self.surface = DisplaySurface(self.vga, self._region(SURFACE, REGION_SIZE, shared))

    def _move_lfb(self, address: int | None) -> None:
        self.bus.unregister(self._lfb)
        if address is not None:
            self.bus.register(self._lfb, "mmio", address, self._lfb.size, name="vga-lfb")

    def _move_vga_mmio(self, address: int | None) -> None:
        self.bus.unregister(self._vga_mmio)
        if address is not None:
            self.bus.register(self._vga_mmio, "mmio", address, 4096, name="vga-mmio")

    def note_dma(self, ranges) -> None:
        """The device process wrote guest RAM: the engine forgets stale code, and a teleport in
        progress learns the pages (they are written through another process's mapping)."""
        self.engine.note_dma(ranges)
        if self._trackers:
            self._dma_written.extend(ranges)

    def written_pages(self, area: str):
        """Indices of the pages of a shared area ("ram" or "vram") written since the last call,
        as a numpy array; None on the first call, which starts tracking (every page counts)."""
        region = self.ram if area == "ram" else next(
            (r for r in self._regions if getattr(r, "name", "").endswith("-" + area)), None)
        if region is None:
            raise EngineError(f"this VM has no shared memory area {area!r}")
        tracker = self._trackers.get(area)
        if tracker is None:
            self._trackers[area] = WriteTracker(region.address, region.size)
            if area == "ram":
                self._dma_written = []
            return None
        pages = tracker.take_written()
        if area == "ram" and self._dma_written:
            ranges, self._dma_written = self._dma_written, []
            extra = [np.arange(gpa // PAGE, (gpa + length + PAGE - 1) // PAGE) for gpa, length in ranges]
            pages = merge_pages(pages, np.concatenate(extra).astype(np.int64))
            pages = pages[pages < region.size // PAGE]
        return pages

    def stop_tracking(self) -> None:
        for tracker in self._trackers.values():
            tracker.close()
        self._trackers = {}
        self._dma_written = []

    def screenshot_png(self, dest) -> None:
        if self.surface is None:
            raise EngineError("this VM has no display")
        from PIL import Image
        with self.display_lock:
            # Rendered apart from the surface: a screenshot must not swallow the damage the
            # display channel has yet to publish.
            frame = self.surface.renderer.render()
        height, width = frame.shape[:2]
        if not width or not height:
            raise EngineError("the guest has not set a display mode yet")
        Image.frombuffer("RGB", (width, height), frame.tobytes(), "raw", "BGRX", 0, 1).save(dest, format="PNG")

    def screen_text(self) -> list[str] | None:
        """The console's characters in a text mode (None in graphics modes or without a display)."""
        from services.hw.display.text import screen_text
        return screen_text(self.vga) if self.vga is not None else None

    def keyboard(self, scancodes: list[tuple[int, bool, bool]]) -> None:
        """(set-1 code, extended, pressed) events, as RDP delivers them."""
        keyboard = self.bus.device("i8042").keyboard
        for code, extended, pressed in scancodes:
            keyboard.key(code, extended, pressed)

    def mouse(self, dx: int, dy: int, dz: int = 0, buttons: int | None = None) -> None:
        mouse = self.bus.device("i8042").mouse
        if mouse is not None:
            mouse.mouse(dx, dy, dz, buttons)

    def power_button(self) -> bool:
        """ACPI power button: True if the guest has ACPI on and listens to it."""
        try:
            return self.bus.device("apm").pm.power_button()
        except KeyError:
            return False

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
        self.network.reset()
        if self.device_bus is not None:
            self.device_bus.reset()
        self.engine.reset()

    def snapshot(self) -> dict:
        return {"version": MACHINE_STATE_VERSION, "engine": self.engine.snapshot(),
                "platform": self.bus.snapshot(), "network": self.network.snapshot()}

    def restore(self, state: dict) -> None:
        if state.get("version") != MACHINE_STATE_VERSION:
            raise EngineError(f"machine state version {state.get('version')} is not {MACHINE_STATE_VERSION}")
        self.engine.restore(state["engine"])
        self.bus.restore(state["platform"])
        self.network.restore(state.get("network", {}))

    def close(self) -> None:
        self.stop_tracking()
        if self.engine is not None:
            self.engine.close()
        self._release_ram()

    def _release_ram(self) -> None:
        for region in self._regions:
            region.close()
            region.unlink()
        self._regions = []
        if self._owns_ram:
            self.ram.close()
            self.ram.unlink()
            self._owns_ram = False
