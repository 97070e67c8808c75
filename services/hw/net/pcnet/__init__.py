"""The AMD PCnet family as VirtualBox offers it (PCnet-FAST III Am79C973, PCnet-PCI II Am79C970A):
the register file and its state machine (device.py), descriptor rings, MII PHY, and its PCI face."""

from services.hw.net.pcnet.device import PcNet
from services.hw.net.pcnet.pci import INTA, PcNetPci
from services.hw.net.pcnet.registers import CHIPS, IO_SIZE, MMIO_SIZE

__all__ = ["CHIPS", "INTA", "IO_SIZE", "MMIO_SIZE", "PcNet", "PcNetPci"]
