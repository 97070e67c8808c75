"""The VM's disk controller as the device process hosts it: IDE channels, drives over their images,
the bus-master ports that follow BAR4, DMA straight into the shared guest RAM."""

from __future__ import annotations

from dataclasses import dataclass

from services.hw.storage.atapi import CdromDrive
from services.hw.storage.ide.controller import IdeController
from services.hw.storage.ide.disk import HardDisk
from services.hw.storage.ide.pci import PiixIdeFunction
from services.images.image import open_image

IDE_IRQ = (14, 15)


@dataclass(frozen=True)
class DriveSpec:
    """One attached medium: VBoxManage's `--port <channel> --device <unit> --type hdd|dvddrive`."""

    channel: int
    unit: int
    kind: str            # "hdd" or "dvd"
    path: str | None     # None: an empty DVD drive

    @classmethod
    def parse(cls, text: str) -> "DriveSpec":
        """CHANNEL:UNIT:KIND[:PATH], e.g. 1:0:dvd:/isos/demo.iso or 0:0:hdd:/vms/disk.vdi."""
        parts = text.split(":", 3)
        if len(parts) < 3 or parts[0] not in ("0", "1") or parts[1] not in ("0", "1") \
                or parts[2] not in ("hdd", "dvd"):
            raise ValueError(f"bad drive '{text}' (expected CHANNEL:UNIT:hdd|dvd[:PATH], channel and unit 0 or 1)")
        path = parts[3] if len(parts) == 4 and parts[3] else None
        if parts[2] == "hdd" and path is None:
            raise ValueError(f"bad drive '{text}': a hard disk needs an image file")
        return cls(int(parts[0]), int(parts[1]), parts[2], path)


class DiskController:
    """IDE controller + drives + the bus-master port mapping on one bus."""

    def __init__(self, bus, memory, specs: list[DriveSpec], *, model: str = "piix3",
                 set_irq=lambda gsi, level: None, on_dma_write=None):
        self.bus = bus
        self.images = []
        self.ide = IdeController(irq=lambda channel, level: set_irq(IDE_IRQ[channel], level),
                                 memory=memory, on_dma_write=on_dma_write)
        try:
            for spec in specs:
                if spec.kind == "hdd":
                    image = open_image(spec.path, "hdd")
                    self.images.append(image)
                    self.ide.attach(spec.channel, spec.unit, HardDisk(image))
                else:
                    image = open_image(spec.path, "dvd", readonly=True) if spec.path else None
                    if image is not None:
                        self.images.append(image)
                    self.ide.attach(spec.channel, spec.unit, CdromDrive(image))
        except BaseException:
            self.close()
            raise
        self.ide.register(bus)
        self.pci = PiixIdeFunction(model, on_bar_change=self._move_bus_master)

    def _move_bus_master(self, index: int, old: int | None, new: int | None) -> None:
        self.bus.unregister(self.ide.bus_master)
        if new is not None:
            self.bus.register(self.ide.bus_master, "pio", new, 16, name="ide-bus-master")

    def flush(self) -> None:
        for image in self.images:
            image.flush()

    def release_media(self) -> None:
        for image in self.images:
            image.release_lock()

    def take_media(self) -> None:
        taken = []
        try:
            for image in self.images:
                image.take_lock()
                taken.append(image)
        except BaseException:
            for image in taken:
                image.release_lock()
            raise

    def close(self) -> None:
        for image in self.images:
            image.close()
        self.images = []
