"""Complaints about what a guest's driver did wrong, logged without letting a misbehaving guest
flood the log: each kind of fault is logged the 1st, 10th, 100th... time, with its count."""

from __future__ import annotations

import logging


class GuestFaults:
    def __init__(self, logger: logging.Logger, card: str):
        self.logger, self.card = logger, card
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, message: str, *args) -> None:
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if count == 1 or (count % 10 == 0 and str(count).rstrip("0") == "1"):
            self.logger.warning("%s: " + message + " (%d times so far)", self.card, *args, count)
