"""Reports of what a guest driver got wrong (descriptors outside RAM, bogus lengths, broken chains),
logged on the 1st, 2nd, 4th, 8th... occurrence of each kind so a looping driver cannot flood the log."""

from __future__ import annotations

import logging

log = logging.getLogger("headbox.hw.pcnet")


class GuestErrors:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def report(self, kind: str, message: str, *args) -> None:
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if count & (count - 1) == 0:
            log.warning(message + " (%d times so far)", *args, count)
