"""The virtio network card over legacy (transitional) virtio-PCI, as Linux's virtio_pci and
virtio_net drive it: split virtqueues, the register block, the card, its offloads and PCI face."""

from services.hw.net.virtio.net import CHIPS, VirtioNet
from services.hw.net.virtio.pci import INTA, IO_SIZE, MMIO_SIZE, VirtioNetPci

__all__ = ["CHIPS", "INTA", "IO_SIZE", "MMIO_SIZE", "VirtioNet", "VirtioNetPci"]
