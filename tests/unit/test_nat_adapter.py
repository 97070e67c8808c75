"""The device process's end of an adapter (services/devices/network.py) over a real libslirp: frames
from the guest's ring reach the NAT and its answers come back through the other ring with one
doorbell; port-forwarding rules are added, refused, deleted, and retried while their port is taken."""

import socket

import pytest

from services.devices.network import NatAdapter
from services.ipc.frames import REGION_SIZE, rings
from services.ipc.network import NetAdapter, NetworkError, PortForward
from services.ipc.shm import PrivateRegion

GUEST_MAC = bytes.fromhex("080027a1b2c3")


class Bell:
    def __init__(self):
        self.rung = []

    def ring(self, slot):
        self.rung.append(slot)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def adapter():
    region = PrivateRegion(REGION_SIZE)
    bell = Bell()
    nat = NatAdapter(NetAdapter(0, "82540EM", GUEST_MAC.hex()), region, bell)
    nat.bell = bell
    yield nat
    nat.slirp.close()


def arp_request_for_gateway() -> bytes:
    return (b"\xff" * 6 + GUEST_MAC + b"\x08\x06" + bytes.fromhex("0001080006040001") + GUEST_MAC
            + bytes([10, 0, 2, 15]) + b"\0" * 6 + bytes([10, 0, 2, 2]))


def test_a_frame_from_the_guest_ring_is_answered_through_the_other(adapter):
    to_nat, to_guest = rings(adapter.region.view())
    assert to_nat.push(arp_request_for_gateway())
    adapter.from_guest()
    adapter.slirp.dispatch({})
    adapter.flush()
    reply = to_guest.peek()
    assert reply is not None and reply[12:14] == b"\x08\x06" and reply[20:22] == b"\x00\x02"   # ARP reply
    assert reply[:6] == GUEST_MAC and adapter.bell.rung == [0]


def test_rules_are_added_refused_and_deleted(adapter):
    port = free_port()
    adapter.add_forward(PortForward.parse(f"web,tcp,127.0.0.1,{port},,80"))
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(NetworkError, match="exists already"):
        adapter.add_forward(PortForward.parse(f"web,tcp,127.0.0.1,{free_port()},,80"))
    adapter.remove_forward("web")
    with pytest.raises(NetworkError, match="no port-forwarding rule named 'web'"):
        adapter.remove_forward("web")


def test_a_rule_whose_port_is_taken_is_bound_once_it_is_free():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    region = PrivateRegion(REGION_SIZE)
    nat = NatAdapter(NetAdapter(0, "82540EM", GUEST_MAC.hex(),
                                forwards=(PortForward.parse(f"web,tcp,127.0.0.1,{port},,80"),)), region, Bell())
    try:
        assert [r.name for r in nat.unbound] == ["web"] and "web" not in nat.forwards
        taken.close()
        nat.retry_at = 0
        nat.retry_unbound()
        assert nat.unbound == [] and "web" in nat.forwards
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        nat.slirp.close()
