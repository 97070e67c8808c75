"""The debug console: bytes written to port 0x402 (SeaBIOS) or 0xE9 (Bochs) go to a sink.

Reading it returns 0xE9, which is how SeaBIOS decides the port is there and worth writing to."""

from __future__ import annotations

from typing import Callable

SEABIOS_PORT = 0x402
BOCHS_PORT = 0xE9
READBACK = 0xE9


class DebugConsole:
    """Write-only text output; `sink` receives each write's bytes (None discards them)."""

    def __init__(self, sink: Callable[[bytes], None] | None = None):
        self.sink = sink

    def read(self, offset: int, size: int) -> int:
        return READBACK

    def write(self, offset: int, size: int, value: int) -> None:
        if self.sink is not None:
            self.sink((value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def read_string(self, offset: int, size: int, count: int) -> bytes:
        return READBACK.to_bytes(size, "little") * count

    def write_string(self, offset: int, size: int, data: bytes) -> None:
        # `rep outsb` of a whole message arrives here as one call: one sink call, not one per byte.
        if self.sink is not None and data:
            self.sink(bytes(data))

    def snapshot(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass
