"""The PIIX3/PIIX4 IDE controller: two ATA channels with hard disks and ATAPI CD/DVD drives, PIO and
bus-master DMA, and the PCI function (00:01.1) whose BAR4 places the bus-master registers."""

# The public names in one place, for code that imports them from the package (Headbox itself names
# the module that defines each).
from services.hw.storage.atapi import CdromDrive
from services.hw.storage.ide.busmaster import BusMasterPorts
from services.hw.storage.ide.channel import IdeChannel
from services.hw.storage.ide.controller import CHANNELS, IdeController
from services.hw.storage.ide.disk import HardDisk, cmos_disk_bytes
from services.hw.storage.ide.pci import (
    IDE_FUNCTION,
    IDE_SLOT,
    PiixIdeFunction,
    boot_path,
)

__all__ = ["HardDisk", "CdromDrive", "IdeController", "IdeChannel", "BusMasterPorts", "PiixIdeFunction",
           "boot_path", "cmos_disk_bytes", "CHANNELS", "IDE_SLOT", "IDE_FUNCTION"]
