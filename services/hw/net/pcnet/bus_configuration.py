"""The bus configuration registers (BCRs) reached through BDP: I/O mode, software style, LEDs
whose LEDOUT follows the link, and the MII management port (BCR32-34) in front of the PHY."""

from __future__ import annotations

from services.hw.net.pcnet import registers as r
from services.hw.net.pcnet.guest_errors import GuestErrors
from services.hw.net.pcnet.mii import PHY_ADDRESS, Am79C874Phy
from services.hw.net.pcnet.registers import Chip

# BCR20's read-only size bits for SWSTYLE 0 (LANCE), 1 (ILACC), 2 and 3 (PCnet-PCI)
_STYLE_BITS = (r.CSRPCNET, r.SSIZE32, r.SSIZE32 | r.CSRPCNET, r.SSIZE32 | r.CSRPCNET)


class BusConfiguration:
    def __init__(self, model: Chip, phy: Am79C874Phy, errors: GuestErrors):
        self.model, self.phy, self.errors = model, phy, errors
        self.reset()

    def reset(self) -> None:
        self.registers = [0] * r.BCR_COUNT
        for number, value in r.BCR_POWER_ON.items():
            self.registers[number] = value

    @property
    def style(self) -> int:
        return self.registers[r.SWS] & r.SWSTYLE_MASK

    @property
    def ssize32(self) -> bool:
        return bool(self.registers[r.SWS] & r.SSIZE32)

    def read(self, number: int) -> int:
        if number == r.MIIMDR:
            address = self.registers[r.MIIADDR]
            if not self.model.has_mii or (address >> 5) & 0x1F != PHY_ADDRESS:
                return 0xFFFF                   # no PHY answers: MDIO floats high
            return self.phy.read(address & 0x1F)
        if number in r.LEDS:
            return self._led(number)
        if number == r.MIICAS and self.model.has_mii:
            return self.registers[r.MIICAS] | r.MIIPD
        return self.registers[number] if number < r.BCR_COUNT else 0

    def _led(self, number: int) -> int:
        """An LED register with LEDOUT lit when any status it is enabled for is true; pcnet32 on
        a chip without MII takes BCR4 == 0x00C0 (link enabled, not lit) as "no link"."""
        value = self.registers[number] & ~r.LEDOUT
        if self.phy.carrier:
            fast, full = self.phy.negotiated() if self.model.has_mii else (False, bool(self.registers[r.FDC] & 1))
            lit = r.LED_LINK | (r.LED_FULL_DUPLEX if full else 0) | (r.LED_100MBPS if fast else 0)
            if value & lit:
                value |= r.LEDOUT
        return value

    def write(self, number: int, value: int, stopped: bool) -> bool:
        """Returns whether the descriptor layout (SWSTYLE) changed."""
        registers = self.registers
        if number == r.SWS:
            if not stopped:
                self.errors.report("swstyle-running", "SWSTYLE written while the chip runs: ignored")
                return False
            style = value & r.SWSTYLE_MASK
            if style > 3:                       # pcnet32 writes 4 on close, meaning "back to 16-bit"
                style = 0
            registers[r.SWS] = style | _STYLE_BITS[style]
            return True
        if number == r.BSBC:
            registers[r.BSBC] = (value & ~r.DWIO) | (registers[r.BSBC] & r.DWIO)    # DWIO: read-only here
        elif number == r.MIIMDR:
            address = registers[r.MIIADDR]
            if self.model.has_mii and (address >> 5) & 0x1F == PHY_ADDRESS:
                self.phy.write(address & 0x1F, value)
        elif number == r.MIICAS:
            registers[r.MIICAS] = value & ~(r.MIIPD | r.XPHYRST)
            if self.model.has_mii:
                if value & r.XPHYRST:
                    self.phy.reset()
                if not value & r.DANAS:         # the MAC sets the PHY up from XPHYANE/XPHYFD/XPHYSP
                    self.phy.configure(bool(value & r.XPHYANE), bool(value & r.XPHYFD), bool(value & r.XPHYSP))
        elif number in r.BCRS_WRITABLE:
            registers[number] = value
        return False

    def snapshot(self) -> list[int]:
        return list(self.registers)

    def restore(self, state: list) -> None:
        if len(state) != r.BCR_COUNT:
            raise ValueError(f"the saved PCnet state has {len(state)} BCRs, expected {r.BCR_COUNT}")
        self.registers = [int(v) & 0xFFFF for v in state]
