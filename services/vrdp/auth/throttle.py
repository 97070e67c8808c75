"""Slows password guessing: each failed logon from an address makes that address's next answer wait
longer (1, 2, 4 ... 16 s); a success or ten quiet minutes forget it. Sans-I/O: the caller sleeps."""

from __future__ import annotations

import threading

FIRST_DELAY = 1.0
MAX_DELAY = 16.0
FORGET_AFTER = 600.0


class FailureThrottle:
    def __init__(self, first: float = FIRST_DELAY, maximum: float = MAX_DELAY, forget_after: float = FORGET_AFTER):
        self.first, self.maximum, self.forget_after = first, maximum, forget_after
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, time of the last)
        self._lock = threading.Lock()

    def delay(self, address: str, now: float) -> float:
        """Seconds to wait before answering a logon attempt from `address`."""
        with self._lock:
            count, last = self._failures.get(address, (0, 0.0))
            if count and now - last > self.forget_after:
                del self._failures[address]
                count = 0
        if count == 0:
            return 0.0
        return min(self.maximum, self.first * 2 ** (count - 1))

    def record(self, address: str, granted: bool, now: float) -> None:
        with self._lock:
            if granted:
                self._failures.pop(address, None)
            else:
                count, _ = self._failures.get(address, (0, 0.0))
                self._failures[address] = (count + 1, now)
            # Bounded memory under a flood of addresses: old entries go first.
            if len(self._failures) > 4096:
                for stale in sorted(self._failures, key=lambda a: self._failures[a][1])[:1024]:
                    del self._failures[stale]
