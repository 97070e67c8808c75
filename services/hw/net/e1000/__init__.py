"""The Intel 8254x gigabit family (PRO/1000 MT Desktop 82540EM, T Server 82543GC, MT Server 82545EM):
the register file and rings (device.py), its EEPROM, PHY and transmit path, and its PCI face."""

from services.hw.net.e1000.device import CHIPS, E1000
from services.hw.net.e1000.pci import INTA, E1000Pci
from services.hw.net.e1000.registers import IO_SIZE, MMIO_SIZE

__all__ = ["CHIPS", "E1000", "E1000Pci", "INTA", "IO_SIZE", "MMIO_SIZE"]
