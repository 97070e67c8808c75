"""The copper PHY behind MDIC: a Marvell 88E1000/88E1011 as the e1000 driver expects, whose
status registers follow the cable (link up, auto-negotiation complete at 1000 Mb/s full duplex)."""

from __future__ import annotations

PHY_ADDRESS = 1
# MDIC fields
MDIC_DATA_MASK, MDIC_REG_SHIFT, MDIC_PHY_SHIFT = 0xFFFF, 16, 21
MDIC_OP_WRITE, MDIC_OP_READ = 0x04000000, 0x08000000
MDIC_READY, MDIC_INT, MDIC_ERROR = 0x10000000, 0x20000000, 0x40000000

CONTROL, STATUS, ID1, ID2, AUTONEG_ADV, LP_ABILITY, AUTONEG_EXP = 0, 1, 2, 3, 4, 5, 6
GIG_CONTROL, GIG_STATUS, EXT_STATUS = 9, 10, 15
SPEC_CONTROL, SPEC_STATUS, EXT_SPEC_CONTROL = 0x10, 0x11, 0x14

CONTROL_RESET, CONTROL_RESTART_AUTONEG = 0x8000, 0x0200
STATUS_LINK, STATUS_AUTONEG_DONE = 0x0004, 0x0020
SPEC_STATUS_LINK = 0x0400
PHY_IDS = {"82540EM": 0x0C20, "82545EM": 0x0C20, "82543GC": 0x0C50}   # M88E1011, M88E1000

_POWER_ON = {CONTROL: 0x1140, STATUS: 0x7949, ID1: 0x0141, AUTONEG_ADV: 0x0DE1, LP_ABILITY: 0x0000,
             AUTONEG_EXP: 0x0001, GIG_CONTROL: 0x0E00, GIG_STATUS: 0x0000, EXT_STATUS: 0x3000,
             SPEC_CONTROL: 0x0068, SPEC_STATUS: 0x8100, EXT_SPEC_CONTROL: 0x0C60}
_LINK_UP = {STATUS: 0x796D, LP_ABILITY: 0x45E1, GIG_STATUS: 0x3C00, SPEC_STATUS: 0xAC00}
_WRITABLE = {CONTROL, AUTONEG_ADV, GIG_CONTROL, SPEC_CONTROL, EXT_SPEC_CONTROL, 0x16, 0x1D, 0x1E}


class M88Phy:
    def __init__(self, chip: str, link_up: bool = True):
        self.id2 = PHY_IDS[chip]
        self.link_up = link_up
        self.reset()

    def reset(self) -> None:
        self.registers = dict(_POWER_ON)
        self.registers[ID2] = self.id2
        self._apply_link()

    def set_link(self, up: bool) -> None:
        self.link_up = up
        self._apply_link()

    def _apply_link(self) -> None:
        registers = self.registers
        if self.link_up:
            registers.update(_LINK_UP)
        else:
            for register in _LINK_UP:
                registers[register] = _POWER_ON[register]

    def mdic(self, value: int) -> int:
        """One MDIC write: the register's new value, READY set (operations finish at once)."""
        register = (value >> MDIC_REG_SHIFT) & 0x1F
        if (value >> MDIC_PHY_SHIFT) & 0x1F != PHY_ADDRESS:
            return value | MDIC_READY | MDIC_ERROR
        if value & MDIC_OP_READ:
            data = self.registers.get(register, 0)
            return (value & ~MDIC_DATA_MASK & ~MDIC_ERROR) | MDIC_READY | data
        if value & MDIC_OP_WRITE:
            self.write(register, value & MDIC_DATA_MASK)
        return (value & ~MDIC_ERROR) | MDIC_READY

    def write(self, register: int, data: int) -> None:
        if register not in _WRITABLE:
            return
        if register == CONTROL:
            if data & CONTROL_RESET:
                self.reset()
                return
            data &= ~CONTROL_RESTART_AUTONEG       # negotiation finishes at once
            self._apply_link()
        self.registers[register] = data

    def snapshot(self) -> dict:
        return {"registers": {str(k): v for k, v in self.registers.items()}, "link_up": self.link_up}

    def restore(self, state: dict) -> None:
        self.registers = {int(k): int(v) for k, v in state["registers"].items()}
        self.link_up = bool(state["link_up"])
