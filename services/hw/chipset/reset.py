"""The chipset's reset lines: System Control Port A (0x92: A20 gate, fast reset) and the PIIX
Reset Control Register (0xCF9), both of which SeaBIOS and guests use to reboot the machine."""

from __future__ import annotations

from typing import Callable

PORT_A = 0x92
RESET_CONTROL_PORT = 0xCF9

PORT_A_FAST_RESET, PORT_A_A20 = 0x01, 0x02
RC_SYSTEM_RESET, RC_RESET_CPU, RC_FULL_RESET = 0x02, 0x04, 0x08


class SystemControlPortA:
    """Port 0x92. Bit 1 is the A20 gate, stored and read back (KVM cannot mask A20, so only
    `on_a20_change` hears of it); writing bit 0 resets the machine and never reads back as set."""

    name = "port92"

    def __init__(self, reset: Callable[[], None], on_a20_change: Callable[[bool], None] | None = None):
        self.reset_machine = reset
        self.on_a20_change = on_a20_change
        self.value = 0

    @property
    def a20(self) -> bool:
        return bool(self.value & PORT_A_A20)

    def read(self, offset: int, size: int) -> int:
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        old_a20 = self.a20
        self.value = value & 0xFF & ~PORT_A_FAST_RESET
        if self.on_a20_change is not None and self.a20 != old_a20:
            self.on_a20_change(self.a20)
        if value & PORT_A_FAST_RESET:
            self.reset_machine()

    def reset(self) -> None:
        self.value = 0

    def snapshot(self) -> dict:
        return {"value": self.value}

    def restore(self, state: dict) -> None:
        self.value = int(state["value"]) & 0xFF & ~PORT_A_FAST_RESET


class ResetControl:
    """Port 0xCF9 (byte accesses only; the dword at 0xCF8 is the PCI address register).

    Setting bit 2 resets; bits 1 (hard rather than CPU-only) and 3 (full, power-cycle) choose the
    kind on real hardware — a VM does a full platform reset for every kind, like QEMU."""

    name = "reset-control"

    def __init__(self, reset: Callable[[], None]):
        self.reset_machine = reset
        self.value = 0

    def read(self, offset: int, size: int) -> int:
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value & (RC_SYSTEM_RESET | RC_FULL_RESET)
        if value & RC_RESET_CPU:
            self.reset_machine()

    def reset(self) -> None:
        self.value = 0

    def snapshot(self) -> dict:
        return {"value": self.value}

    def restore(self, state: dict) -> None:
        self.value = int(state["value"]) & (RC_SYSTEM_RESET | RC_FULL_RESET)
