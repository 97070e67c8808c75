"""The linear framebuffer reached through the bus: what the guest sees at BAR0 when the
accelerator does not map the VRAM straight into its address space."""

from __future__ import annotations


class LinearFramebuffer:
    name = "vga-lfb"

    def __init__(self, vram):
        self.buf = vram.buf if hasattr(vram, "buf") else vram
        self.size = len(self.buf)

    def read(self, offset: int, size: int) -> int:
        if offset + size > self.size:
            return (1 << (8 * size)) - 1
        return int.from_bytes(self.buf[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        if offset + size <= self.size:
            self.buf[offset:offset + size] = value.to_bytes(size, "little")

    def snapshot(self) -> dict:
        return {}          # the VRAM is a shared region, saved with the RAM

    def restore(self, state: dict) -> None:
        pass
