"""The test-exit port (QEMU's isa-debug-exit): a write powers the VM off and records AL as the
exit code. Only test VMs get it; it is how tests/guests programs end (`out 0xF4, al`)."""

from __future__ import annotations

from typing import Callable

DEFAULT_PORT = 0xF4


class DebugExit:
    name = "debug-exit"

    def __init__(self, poweroff: Callable[[], None]):
        self.poweroff = poweroff
        self.exit_code: int | None = None

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        self.exit_code = value & 0xFF
        self.poweroff()

    def snapshot(self) -> dict:
        return {"exit_code": self.exit_code}

    def restore(self, state: dict) -> None:
        self.exit_code = state["exit_code"]
