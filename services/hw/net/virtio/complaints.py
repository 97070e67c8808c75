"""The virtio model's log of guest mistakes: each kind is said the 1st, 2nd, 4th, 8th... time, so
a broken driver gets noticed without a guest that repeats it flooding the log."""

from __future__ import annotations

import logging

log = logging.getLogger("headbox.hw.virtio")


class Complaints:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def say(self, kind: str, message: str, *args) -> None:
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if count & (count - 1) == 0:
            log.warning("%s [%s: %d so far]", message % args, kind, count)
