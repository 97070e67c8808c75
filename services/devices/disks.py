"""The VM's disk controller as the device process hosts it: IDE channels, drives over their images,
the bus-master ports that follow BAR4, DMA straight into the shared guest RAM."""

from __future__ import annotations

from services.hw.storage.atapi import CdromDrive
from services.hw.storage.ide.controller import IdeController
from services.hw.storage.ide.disk import HardDisk
from services.hw.storage.ide.pci import PiixIdeFunction
from services.images.image import open_image
from services.ipc.spec import Drive

IDE_IRQ = (14, 15)


class DiskController:
    """IDE controller + drives + the bus-master port mapping on one bus."""

    def __init__(self, bus, memory, drives: list[Drive], *, model: str = "piix3",
                 set_irq=lambda gsi, level: None, on_dma_write=None):
        self.bus = bus
        self.images = []
        self.ide = IdeController(irq=lambda channel, level: set_irq(IDE_IRQ[channel], level),
                                 memory=memory, on_dma_write=on_dma_write)
        try:
            for drive in drives:
                if drive.kind == "hdd":
                    image = open_image(drive.path, "hdd")
                    self.images.append(image)
                    self.ide.attach(drive.channel, drive.unit, HardDisk(image))
                else:
                    image = open_image(drive.path, "dvd", readonly=True) if drive.path else None
                    if image is not None:
                        self.images.append(image)
                    self.ide.attach(drive.channel, drive.unit, CdromDrive(image))
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
