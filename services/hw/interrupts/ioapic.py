"""The 82093AA I/O APIC (24 pins, MMIO page at 0xFEC00000): redirection table, remote IRR, EOI re-delivery.

Sans-I/O: pin levels come in by set_irq(); messages go out by deliver(dest, logical, mode, vector, level)."""

from __future__ import annotations

from typing import Callable

IOAPIC_DEFAULT_BASE = 0xFEC00000
IOAPIC_VERSION = 0x170011        # 24 redirection entries, version 0x11
PINS = 24

RTE_DEST_LOGICAL = 1 << 11
RTE_DELIVERY_STATUS = 1 << 12
RTE_REMOTE_IRR = 1 << 14
RTE_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
_RTE_READONLY = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR


class IoApic:
    """Pin levels are logical (1 = asserted): the polarity bit only tells the OS how the board is
    wired, the lines arriving here are already asserted-high."""

    __slots__ = ("ioapic_id", "index", "redir", "levels", "deliver")

    def __init__(self, deliver: Callable[[int, bool, int, int, bool], None] | None = None):
        self.deliver = deliver
        self.reset()

    def reset(self) -> None:
        self.ioapic_id = 0
        self.index = 0
        self.redir = [RTE_MASKED] * PINS
        self.levels = 0

    def set_irq(self, pin: int, level: bool) -> None:
        bit = 1 << pin
        entry = self.redir[pin]
        if level:
            was = self.levels & bit
            self.levels |= bit
            if entry & RTE_LEVEL:
                self._service_level(pin)
            elif not was and not entry & RTE_MASKED:
                # an edge on a masked pin is lost, not held (82093AA datasheet)
                self._send(entry)
        else:
            self.levels &= ~bit

    def _send(self, entry: int) -> None:
        if self.deliver is not None:
            self.deliver(entry >> 56, bool(entry & RTE_DEST_LOGICAL), (entry >> 8) & 7, entry & 0xFF,
                         bool(entry & RTE_LEVEL))

    def _service_level(self, pin: int) -> None:
        entry = self.redir[pin]
        if entry & (RTE_MASKED | RTE_REMOTE_IRR) or not self.levels & (1 << pin):
            return
        self.redir[pin] = entry | RTE_REMOTE_IRR
        self._send(entry | RTE_REMOTE_IRR)

    def eoi(self, vector: int) -> None:
        """A local APIC's EOI of a level-triggered vector: clear remote IRR, re-deliver if still asserted."""
        redir = self.redir
        for pin in range(PINS):
            entry = redir[pin]
            if entry & RTE_REMOTE_IRR and entry & 0xFF == vector:
                redir[pin] = entry & ~RTE_REMOTE_IRR
                self._service_level(pin)

    # -- registers ---------------------------------------------------------------------------
    def read_register(self, index: int) -> int:
        if index == 0:
            return self.ioapic_id << 24
        if index == 1:
            return IOAPIC_VERSION
        if index == 2:
            return self.ioapic_id << 24           # arbitration ID
        pin = (index - 0x10) >> 1
        if 0 <= pin < PINS:
            entry = self.redir[pin]
            return entry >> 32 if index & 1 else entry & 0xFFFFFFFF
        return 0

    def write_register(self, index: int, value: int) -> None:
        value &= 0xFFFFFFFF
        if index == 0:
            self.ioapic_id = (value >> 24) & 0xF
            return
        pin = (index - 0x10) >> 1
        if not 0 <= pin < PINS:
            return
        entry = self.redir[pin]
        if index & 1:
            self.redir[pin] = (entry & 0xFFFFFFFF) | ((value & 0xFF000000) << 32)
            return
        entry = (entry & ~0xFFFFFFFF) | (entry & _RTE_READONLY) | (value & 0x1AFFF)
        if not entry & RTE_LEVEL:
            entry &= ~RTE_REMOTE_IRR               # remote IRR means nothing for an edge pin
        self.redir[pin] = entry
        if entry & RTE_LEVEL:
            self._service_level(pin)               # unmasking an asserted level line delivers it

    def read(self, offset: int) -> int:
        offset &= 0xFF
        if offset == 0x00:
            return self.index
        if offset == 0x10:
            return self.read_register(self.index)
        return 0

    def write(self, offset: int, value: int) -> None:
        offset &= 0xFF
        if offset == 0x00:
            self.index = value & 0xFF
        elif offset == 0x10:
            self.write_register(self.index, value)

    def snapshot(self) -> dict:
        return {"id": self.ioapic_id, "index": self.index, "redir": list(self.redir),
                "levels": self.levels}

    def restore(self, state: dict) -> None:
        self.ioapic_id = int(state["id"])
        self.index = int(state["index"])
        self.redir = [int(v) for v in state["redir"]]
        self.levels = int(state["levels"])
