"""Which connections the RDP server keeps before they log on, so that a flood of idle connections
cannot lock real clients out (sans-I/O: the server applies the decision).

Like sshd's MaxStartups, the number of connections not logged on yet is bounded, in all and per
source address. A new connection over a bound does not wait: it makes room by closing the oldest
connection still not logged on (from its own address when that address is over its share). A real
client logs on within a second of connecting, so the oldest waiting ones are the idle ones. Only
when every connection has logged on and the total bound is reached is a new one refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.ipc.vrde import ConnectionLimits


class Connected(Protocol):
    ip: str
    accepted_at: float       # time.monotonic() when accepted
    logged_on: bool
    kicked: str | None


@dataclass(frozen=True)
class Admission:
    accept: bool
    close: tuple            # connections to close first to make room


def make_room(limits: ConnectionLimits, connected: Sequence[Connected], address: str) -> Admission:
    """What to do with a new connection from `address`, `connected` being every live connection."""
    live = [c for c in connected if not c.kicked]
    waiting = sorted((c for c in live if not c.logged_on), key=lambda c: c.accepted_at)
    close = []
    same = [c for c in waiting if c.ip == address]
    if len(same) >= limits.max_pending_per_address:
        close.append(same[0])
    elif len(waiting) >= limits.max_pending:
        close.append(waiting[0])
    if len(live) - len(close) >= limits.max_connections:
        spare = [c for c in waiting if c not in close]
        if not spare:
            return Admission(False, tuple(close))
        close.append(spare[0])
    return Admission(True, tuple(close))
