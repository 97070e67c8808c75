"""The 82543's management interface: no MDIC register, so the driver bit-bangs IEEE 802.3 clause 22
frames through CTRL's software pins (SWDPIN2 = MDIO, SWDPIN3 = MDC, SWDPIO2 = MDIO's direction).
On each rising MDC edge the PHY samples MDIO (driver output) or presents the next bit (input)."""

from __future__ import annotations

from services.hw.net.e1000.phy import PHY_ADDRESS

MDIO, MDC, MDIO_OUTPUT = 0x00100000, 0x00200000, 0x01000000
PREAMBLE = 32                  # ones before a frame's start bits
READ, WRITE = 0b10, 0b01
HEADER_BITS = 14               # start (01), opcode, PHY address, register address
WRITE_BITS = 32                # the header, turnaround (10) and 16 data bits


class BitBangMdio:
    def __init__(self, phy):
        self.phy = phy              # M88Phy: registers dict and write()
        self.reset()

    def reset(self) -> None:
        self.ones = 0
        self.bits: list[int] | None = None     # a frame being received, from its start bits
        self.reading: list[int] | None = None  # bits the PHY presents: turnaround 0, 16 data bits
        self.output = 1
        self.clock = False

    def pin_in(self, ctrl: int) -> int:
        """CTRL as the driver reads it: MDIO is the PHY's bit while the pin is an input."""
        if ctrl & MDIO_OUTPUT:
            return ctrl
        return ctrl | MDIO if self.output else ctrl & ~MDIO

    def write_ctrl(self, ctrl: int) -> None:
        rising = bool(ctrl & MDC) and not self.clock
        self.clock = bool(ctrl & MDC)
        if not rising:
            return
        if not ctrl & MDIO_OUTPUT:
            self._present_next()
            return
        bit = 1 if ctrl & MDIO else 0
        if self.bits is None:
            if bit:
                self.ones += 1
            elif self.ones >= PREAMBLE:
                self.bits = [0]
            else:
                self.ones = 0
            return
        self.bits.append(bit)
        if len(self.bits) == HEADER_BITS:
            opcode, address, register = self._header()
            if opcode == READ:
                value = self.phy.registers.get(register, 0) if address == PHY_ADDRESS else 0xFFFF
                self.reading = [0] + [(value >> (15 - i)) & 1 for i in range(16)]
                self._end_frame()
            elif opcode != WRITE:
                self._end_frame()
        elif len(self.bits) == WRITE_BITS:
            _, address, register = self._header()
            if address == PHY_ADDRESS:
                self.phy.write(register, int("".join(map(str, self.bits[16:])), 2))
            self._end_frame()

    def _header(self) -> tuple[int, int, int]:
        value = int("".join(map(str, self.bits[:HEADER_BITS])), 2)
        return (value >> 10) & 3, (value >> 5) & 0x1F, value & 0x1F

    def _present_next(self) -> None:
        if self.reading:
            self.output = self.reading.pop(0)
        else:
            self.reading, self.output = None, 1

    def _end_frame(self) -> None:
        self.bits, self.ones = None, 0

    def snapshot(self) -> dict:
        return {"ones": self.ones, "bits": self.bits, "reading": self.reading, "output": self.output,
                "clock": self.clock}

    def restore(self, state: dict) -> None:
        self.ones, self.bits, self.reading = int(state["ones"]), state["bits"], state["reading"]
        self.output, self.clock = int(state["output"]), bool(state["clock"])
