"""Guest RAM as a network card model sees it in unit tests: a bytearray with the card-facing
read/write interface of services.hw.memory.GuestRam, ValueError outside it."""

from __future__ import annotations


class CardMemory:
    def __init__(self, size: int = 4 << 20):
        self.data = bytearray(size)

    def read(self, gpa: int, size: int) -> bytes:
        if gpa < 0 or gpa + size > len(self.data):
            raise ValueError("not RAM")
        return bytes(self.data[gpa:gpa + size])

    def write(self, gpa: int, data) -> None:
        if gpa < 0 or gpa + len(data) > len(self.data):
            raise ValueError("not RAM")
        self.data[gpa:gpa + len(data)] = data
