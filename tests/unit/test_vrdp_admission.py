"""Which connections the RDP server keeps before they log on (services/vrdp/admission.py): the
oldest waiting connection makes room, an address over its share makes room from its own, and only
a server full of logged-on clients refuses."""

from dataclasses import dataclass

import pytest

from services.ipc.vrde import ConfigError, ConnectionLimits
from services.vrdp.admission import make_room

LIMITS = ConnectionLimits(max_connections=5, max_pending=3, max_pending_per_address=2, logon_timeout=30,
                          step_timeout=10)


@dataclass(eq=False)
class Conn:
    ip: str
    accepted_at: float
    logged_on: bool = False
    kicked: str | None = None


def test_room_while_under_the_limits():
    assert make_room(LIMITS, [Conn("a", 1)], "b").accept
    assert make_room(LIMITS, [Conn("a", 1)], "b").close == ()


def test_an_address_over_its_share_gives_up_its_own_oldest():
    mine = [Conn("a", 2), Conn("a", 1)]
    other = Conn("b", 0)
    admission = make_room(LIMITS, [other, *mine], "a")
    assert admission.accept and admission.close == (mine[1],)


def test_over_the_waiting_limit_the_oldest_waiting_goes():
    waiting = [Conn("a", 5), Conn("b", 3), Conn("c", 4)]
    logged_on = Conn("d", 1, logged_on=True)
    admission = make_room(LIMITS, [logged_on, *waiting], "e")
    assert admission.accept and admission.close == (waiting[1],)


def test_a_full_server_refuses_only_when_everyone_logged_on():
    full = [Conn(f"10.0.0.{n}", n, logged_on=True) for n in range(5)]
    assert not make_room(LIMITS, full, "x").accept
    full[4] = Conn("y", 9)
    admission = make_room(LIMITS, full, "x")
    assert admission.accept and admission.close == (full[4],)
    kicked = [*full[:4], Conn("z", 10, kicked="gone")]
    assert make_room(LIMITS, kicked, "x").accept       # kicked ones do not count


@pytest.mark.parametrize("name, value", [("Limits/MaxConnections", "0"), ("Limits/LogonTimeout", "abc"),
                                         ("Limits/MaxPendingPerAddress", "-1")])
def test_bad_limit_properties_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        ConnectionLimits.from_properties({name: value})
