"""The MII PHY the PCnet-FAST III reaches through BCR33/BCR34: an Am79C874 NetPHY-1 at address 0,
as VirtualBox wires it, whose link bit (latched low, as MII requires) and negotiation follow the cable."""

from __future__ import annotations

PHY_ADDRESS = 0
BMCR, BMSR, PHYSID1, PHYSID2, ADVERTISE, LPA, EXPANSION, DIAGNOSTIC = 0, 1, 2, 3, 4, 5, 6, 18
PHY_ID = (0x0022, 0x561B)       # Am79C874 (AC101)

BMCR_RESET, BMCR_LOOPBACK, BMCR_SPEED100, BMCR_ANENABLE = 0x8000, 0x4000, 0x2000, 0x1000
BMCR_PDOWN, BMCR_ISOLATE, BMCR_ANRESTART, BMCR_FULLDPLX = 0x0800, 0x0400, 0x0200, 0x0100
BMCR_POWER_ON = BMCR_SPEED100 | BMCR_ANENABLE | BMCR_FULLDPLX
# 100BASE-TX full/half, 10BASE-T full/half, preamble suppression, can negotiate, extended registers
BMSR_ABILITIES = 0x7800 | 0x0040 | 0x0008 | 0x0001
BMSR_LINK, BMSR_ANEGCOMPLETE = 0x0004, 0x0020
ADVERTISE_POWER_ON = 0x01E1     # 100 full/half, 10 full/half, IEEE 802.3 selector
ADVERTISE_100FULL, ADVERTISE_100HALF, ADVERTISE_10FULL = 0x0100, 0x0080, 0x0040
PARTNER_ABILITY = 0x4000 | 0x0400 | 0x01E1       # acknowledged, pause, everything we can do
EXPANSION_PARTNER_NEGOTIATES = 0x0001
DIAGNOSTIC_LOCKED, DIAGNOSTIC_100, DIAGNOSTIC_FULL = 0x0300, 0x0400, 0x0800    # PLL locked, signal


class Am79C874Phy:
    def __init__(self, link_up: bool = True):
        self.link_up = link_up
        self.reset()

    def reset(self) -> None:
        self.control = BMCR_POWER_ON
        self.advertise = ADVERTISE_POWER_ON
        self.link_latched_down = not self.link_up

    def set_link(self, up: bool) -> None:
        if not up:
            self.link_latched_down = True       # stays visible until the driver reads BMSR
        self.link_up = up

    @property
    def carrier(self) -> bool:
        """Link as the MAC sees it: a powered-down or isolated PHY passes nothing."""
        return self.link_up and not self.control & (BMCR_PDOWN | BMCR_ISOLATE)

    def negotiated(self) -> tuple[bool, bool]:
        """(100 Mb/s, full duplex) the link runs at."""
        if not self.control & BMCR_ANENABLE:
            return bool(self.control & BMCR_SPEED100), bool(self.control & BMCR_FULLDPLX)
        common = self.advertise & PARTNER_ABILITY
        if common & ADVERTISE_100FULL:
            return True, True
        if common & ADVERTISE_100HALF:
            return True, False
        return False, bool(common & ADVERTISE_10FULL)

    def configure(self, autonegotiate: bool, full_duplex: bool, fast: bool) -> None:
        """BCR32's XPHYANE/XPHYFD/XPHYSP, which the MAC copies into the PHY unless DANAS is set."""
        control = self.control & ~(BMCR_ANENABLE | BMCR_FULLDPLX | BMCR_SPEED100)
        self.control = (control | (BMCR_ANENABLE if autonegotiate else 0) | (BMCR_FULLDPLX if full_duplex else 0)
                        | (BMCR_SPEED100 if fast else 0))

    def read(self, register: int) -> int:
        negotiating = bool(self.control & BMCR_ANENABLE)
        if register == BMCR:
            return self.control
        if register == BMSR:
            status = BMSR_ABILITIES
            if self.carrier:
                if not self.link_latched_down:
                    status |= BMSR_LINK
                if negotiating:
                    status |= BMSR_ANEGCOMPLETE
            self.link_latched_down = False
            return status
        if register in (PHYSID1, PHYSID2):
            return PHY_ID[register - PHYSID1]
        if register == ADVERTISE:
            return self.advertise
        if register == LPA:
            return PARTNER_ABILITY if self.carrier and negotiating else 0
        if register == EXPANSION:
            return EXPANSION_PARTNER_NEGOTIATES if self.carrier and negotiating else 0
        if register == DIAGNOSTIC and self.carrier:
            fast, full = self.negotiated()
            return DIAGNOSTIC_LOCKED | (DIAGNOSTIC_100 if fast else 0) | (DIAGNOSTIC_FULL if full else 0)
        return 0

    def write(self, register: int, value: int) -> None:
        value &= 0xFFFF
        if register == BMCR:
            if value & BMCR_RESET:
                self.reset()
            else:
                self.control = value & ~BMCR_ANRESTART      # negotiation finishes at once
        elif register == ADVERTISE:
            self.advertise = value

    def snapshot(self) -> dict:
        return {"control": self.control, "advertise": self.advertise, "link_up": self.link_up,
                "latched_down": self.link_latched_down}

    def restore(self, state: dict) -> None:
        self.control = int(state["control"]) & 0xFFFF
        self.advertise = int(state["advertise"]) & 0xFFFF
        self.link_up = bool(state["link_up"])
        self.link_latched_down = bool(state["latched_down"])
