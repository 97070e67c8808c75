"""The VRDP server's client registry without sockets: the multi-connection rule at logon, replacing
and kicking clients, and damage reaching every connected client."""

import pytest

from services.ipc.vrde import ConnectionLimits, VrdeConfig
from services.vrdp.clients import ClientRegistry, LogonRefused

LIMITS = ConnectionLimits.from_properties({})


class FakeClient:
    """What the registry uses of a ClientHandler."""

    def __init__(self, client_id, ip="10.0.0.1"):
        self.id = client_id
        self.ip = ip
        self.accepted_at = float(client_id)
        self.user = self.since = self.kicked = None
        self.damaged = []

    @property
    def logged_on(self):
        return self.since is not None

    def kick(self, reason, wake=False):
        self.kicked = reason

    def damage(self, rects, size, mode_changed):
        self.damaged.append((rects, size, mode_changed))


def registry_of(count):
    registry = ClientRegistry()
    clients = [FakeClient(n) for n in range(count, 0, -1)]
    for client in clients:
        assert registry.add(client, LIMITS)
    return registry, sorted(clients, key=lambda c: c.id)


def test_without_multicon_the_second_logon_is_refused():
    registry, (first, second) = registry_of(2)
    registry.admit(first, VrdeConfig(), "alice")
    assert first.user == "alice" and first.logged_on
    with pytest.raises(LogonRefused):
        registry.admit(second, VrdeConfig(), "bob")
    assert not second.logged_on and first.kicked is None


def test_reusecon_replaces_the_logged_on_client_and_multicon_keeps_both():
    registry, (first, second, third) = registry_of(3)
    registry.admit(first, VrdeConfig(reusecon=True), "alice")
    registry.admit(second, VrdeConfig(reusecon=True), "bob")
    assert first.kicked and second.logged_on and second.kicked is None
    registry.admit(third, VrdeConfig(multicon=True), "carol")
    assert second.kicked is None and third.logged_on


def test_connected_in_id_order_forget_kick_all_and_damage():
    registry, clients = registry_of(3)
    assert registry.connected() == clients
    registry.forget(clients[1])
    assert registry.connected() == [clients[0], clients[2]]
    registry.damage_all([(0, 0, 8, 8)], (640, 480), True)
    assert clients[0].damaged == clients[2].damaged == [([(0, 0, 8, 8)], (640, 480), True)]
    assert clients[1].damaged == []
    assert registry.kick_all("disconnected by the server") == 2
    assert clients[0].kicked == clients[2].kicked == "disconnected by the server" and clients[1].kicked is None


def test_a_new_connection_closes_the_oldest_waiting_one_beyond_the_limits():
    limits = ConnectionLimits.from_properties({"Limits/MaxPendingConnections": "2",
                                               "Limits/MaxConnections": "3"})
    registry = ClientRegistry()
    first, second, third, fourth = (FakeClient(n) for n in range(1, 5))
    assert registry.add(first, limits) and registry.add(second, limits)
    assert registry.add(third, limits)                 # two waiting at most: the oldest goes
    assert first.kicked and not second.kicked
    registry.forget(first)
    registry.admit(second, VrdeConfig(multicon=True), "alice")
    registry.admit(third, VrdeConfig(multicon=True), "bob")
    assert registry.add(fourth, limits)
    registry.admit(fourth, VrdeConfig(multicon=True), "carol")
    assert not registry.add(FakeClient(5), limits)     # three connections, all logged on: refused
    assert not any(c.kicked for c in (second, third, fourth))
