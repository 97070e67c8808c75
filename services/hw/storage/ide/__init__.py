"""The PIIX3/PIIX4 IDE controller: two ATA channels with hard disks and ATAPI CD/DVD drives, PIO and
bus-master DMA, and the PCI function (00:01.1) whose BAR4 places the bus-master registers."""

from services.hw.storage.ide.channel import *  # noqa: F401,F403
from services.hw.storage.ide.channel import __all__  # noqa: F401
