"""The IDE controller's PCI function (00:01.1 of the PIIX3/PIIX4): configuration space with the timing
registers and BAR4 for the bus-master ports, and the boot path SeaBIOS gives the drives behind it."""

from __future__ import annotations

from typing import Callable

from services.hw.chipset.pci import BAR_IO, COMMAND_IO, STATUS, PciFunction
from services.hw.storage.ide.busmaster import BM_SIZE

IDE_SLOT, IDE_FUNCTION = 1, 1
BM_BAR = 4
IDETIM, SIDETIM, UDMACTL, UDMATIM = 0x40, 0x44, 0x48, 0x4A
PIIX_DEVICE_IDS = {"piix3": 0x7010, "piix4": 0x7111}


class PiixIdeFunction(PciFunction):
    """The IDE function's configuration space: class 01.01 prog-if 80h (legacy ports, bus master),
    BAR4 the 16 bus-master ports, IDETIM/SIDETIM (and PIIX4's UDMA registers) writable for the
    timing the BIOS and drivers program. `on_bar_change(4, old, new)` fires whenever the decoded
    bus-master base changes, including on reset and restore."""

    def __init__(self, model: str = "piix3",
                 on_bar_change: Callable[[int, int | None, int | None], None] | None = None):
        if model not in PIIX_DEVICE_IDS:
            raise ValueError(f"unknown IDE controller '{model}' (expected piix3 or piix4)")
        super().__init__(0x8086, PIIX_DEVICE_IDS[model], 0x010180, revision=1 if model == "piix4" else 0)
        self._set(STATUS, 2, 0x0280)        # fast back-to-back capable, medium DEVSEL timing
        self.add_bar(BM_BAR, BM_SIZE, BAR_IO)
        self.set_writable(IDETIM, 4)
        self.set_writable(SIDETIM, 1)
        if model == "piix4":
            self.set_writable(UDMACTL, 1, 0x0F)
            self.set_writable(UDMATIM, 2, 0x3333)
        self._power_on = bytes(self.config)
        self.on_bar_change = on_bar_change
        self.bus_master_base: int | None = None

    def _decoded_base(self) -> int | None:
        base = self.bar_address(BM_BAR)
        # Sizing writes all-ones; such an address is beyond the 64 KiB of port space, not decoded.
        if not self.command & COMMAND_IO or not base or base + BM_SIZE > 0x10000:
            return None
        return base

    def _follow_bar(self) -> None:
        new = self._decoded_base()
        if new != self.bus_master_base:
            old, self.bus_master_base = self.bus_master_base, new
            if self.on_bar_change is not None:
                self.on_bar_change(BM_BAR, old, new)

    def config_write(self, offset: int, size: int, value: int) -> None:
        super().config_write(offset, size, value)
        self._follow_bar()

    def reset(self) -> None:
        super().reset()
        self._follow_bar()

    def restore(self, state: dict) -> None:
        super().restore(state)
        self._follow_bar()


def boot_path(channel: int, unit: int, slot: int = IDE_SLOT, function: int = IDE_FUNCTION) -> str:
    """The OpenFirmware path SeaBIOS matches in fw_cfg "bootorder" for an IDE drive (disk or CD)."""
    return f"/pci@i0cf8/ide@{slot:x},{function:x}/drive@{channel:x}/disk@{unit:x}"
