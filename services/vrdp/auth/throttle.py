"""Slows password guessing from one address, without sleeping past a real client's patience.

- Logons from one address, and logons of one user name, are checked one at a time: parallel guesses
  queue instead of sharing one delay. A guess that cannot get its turn within QUEUE_WAIT seconds is
  refused unchecked.
- Each failure from an address delays its next answer (1, 2, 4 s). From LOCKOUT_AFTER failures on,
  the address is locked out for LOCKOUT seconds, doubling with each further failure (at most
  MAX_LOCKOUT): logons from it are refused at once, the password unchecked, so a right guess among
  many wrong ones gets nothing. xfreerdp gives up after about 9 s, so no answer waits longer.
- A success outside a lockout, or FORGET_AFTER quiet seconds after the lockout ends, forgets the
  address. The table is saved (0600) in the server's state folder, so a restart does not reset it.

The policy is sans-I/O (`verdict`, `record`); `turn` holds the per-address and per-user locks."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from services.private_file import write_private

log = logging.getLogger("headbox.vrdp.auth")

FIRST_DELAY = 1.0
MAX_DELAY = 4.0
LOCKOUT_AFTER = 5
LOCKOUT = 60.0
MAX_LOCKOUT = 900.0
FORGET_AFTER = 600.0
QUEUE_WAIT = 5.0
MAX_ADDRESSES = 4096


@dataclass(frozen=True)
class Verdict:
    delay: float = 0.0              # seconds to wait before checking the password
    locked_for: float = 0.0         # > 0: refuse at once, unchecked, for this many more seconds


class FailureThrottle:
    def __init__(self, path: str | None = None, *, first: float = FIRST_DELAY, maximum: float = MAX_DELAY,
                 lockout_after: int = LOCKOUT_AFTER, lockout: float = LOCKOUT, max_lockout: float = MAX_LOCKOUT,
                 forget_after: float = FORGET_AFTER, queue_wait: float = QUEUE_WAIT):
        self.path = path
        self.first, self.maximum = first, maximum
        self.lockout_after, self.lockout, self.max_lockout = lockout_after, lockout, max_lockout
        self.forget_after, self.queue_wait = forget_after, queue_wait
        self._failures: dict[str, tuple[int, float]] = {}   # address -> (count, wall time of the last)
        self._lock = threading.Lock()
        self._turns: dict[str, list] = {}
        self._load()

    # --- policy -------------------------------------------------------------------------------------

    def _lockout_for(self, count: int) -> float:
        if count < self.lockout_after:
            return 0.0
        return min(self.max_lockout, self.lockout * 2 ** (count - self.lockout_after))

    def verdict(self, address: str, now: float) -> Verdict:
        """What a logon attempt from `address` gets at wall time `now`."""
        with self._lock:
            count, last = self._failures.get(address, (0, 0.0))
            if count and now - last > self._lockout_for(count) + self.forget_after:
                del self._failures[address]
                count = 0
        if count == 0:
            return Verdict()
        locked_until = last + self._lockout_for(count)
        if now < locked_until:
            return Verdict(locked_for=locked_until - now)
        return Verdict(delay=min(self.maximum, self.first * 2 ** (count - 1)))

    def record(self, address: str, granted: bool, now: float) -> None:
        """The outcome of a checked logon (never of one refused unchecked)."""
        with self._lock:
            if granted:
                if self._failures.pop(address, None) is None:
                    return              # nothing changed: no write (a synced file per logon is slow)
            else:
                count, _ = self._failures.get(address, (0, 0.0))
                self._failures[address] = (count + 1, now)
            # Bounded memory under a flood of addresses: old entries go first.
            if len(self._failures) > MAX_ADDRESSES:
                for stale in sorted(self._failures, key=lambda a: self._failures[a][1])[:MAX_ADDRESSES // 4]:
                    del self._failures[stale]
            table = dict(self._failures)
        self._save(table)

    # --- one logon at a time per address and per user -----------------------------------------------

    @contextlib.contextmanager
    def turn(self, address: str, user: str) -> Iterator[bool]:
        """Yields True once this attempt holds the turn of its address and of its user name, False
        when it could not get it within queue_wait seconds (refuse it, unchecked)."""
        keys = [f"address:{address}", f"user:{user.casefold()}"]
        with self._lock:                # [lock, attempts holding or waiting for it]
            entries = [self._turns.setdefault(key, [threading.Lock(), 0]) for key in keys]
            for entry in entries:
                entry[1] += 1
        held = []
        try:
            for lock, _ in entries:     # always address before user: no two attempts wait in a cycle
                if not lock.acquire(timeout=self.queue_wait):
                    break
                held.append(lock)
            yield len(held) == len(entries)
        finally:
            for lock in reversed(held):
                lock.release()
            with self._lock:            # a turn nobody waits for goes: a flood of names does not pile up
                for key, entry in zip(keys, entries):
                    entry[1] -= 1
                    if entry[1] == 0:
                        del self._turns[key]

    # --- across restarts ----------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path) as file:
                table = json.load(file)
            self._failures = {str(a): (int(c), float(t)) for a, (c, t) in table.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError) as error:
            log.warning("logon throttle: %s is unreadable (%s); starting afresh", self.path, error)

    def _save(self, table: dict) -> None:
        if not self.path:
            return
        try:
            write_private(self.path, json.dumps(table))
        except OSError as error:
            log.warning("logon throttle: cannot save %s: %s", self.path, error)
