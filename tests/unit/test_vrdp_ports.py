"""TCP/Ports syntax and VirtualBox's bind rule: the first port of the list that binds wins."""

import socket

import pytest

from services.ipc.vrde import ConfigError, normalize_ports, ports_in_order
from services.vrdp.ports import bind_listener


def test_list_and_ranges_in_order():
    assert list(ports_in_order("5000,5010-5012")) == [5000, 5010, 5011, 5012]
    assert list(ports_in_order(" 80 , 81")) == [80, 81]
    assert normalize_ports(" 80 , 81,5010-5012 ") == "80,81,5010-5012"


def test_the_defaults_are_3389():
    for text in ("0", "default", ""):
        assert list(ports_in_order(text)) == [3389]


@pytest.mark.parametrize("text,why", [
    ("x", "neither a port nor a range"), ("70000", "1..65535"), ("1-2-3", "neither"), ("5000,,7", "neither"),
    ("5000-", "neither"), ("13395-13393", "from low to high"), ("0,80", "1..65535")])
def test_a_bad_item_is_refused_by_name(text, why):
    with pytest.raises(ConfigError, match=why):
        list(ports_in_order(text))


def _taken():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_first_free_port_of_the_list_binds():
    first, second = _taken(), _taken()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    free = probe.getsockname()[1]
    probe.close()
    try:
        ports = f"{first.getsockname()[1]},{second.getsockname()[1]},{free}"
        listener = bind_listener(ports, "127.0.0.1")
        assert listener is not None and listener.port == free and listener.families == "IPv4"
        client = socket.create_connection(("127.0.0.1", free), timeout=2)
        accepted, _ = listener.sockets[0].accept()
        accepted.close()
        client.close()
        listener.close()
    finally:
        first.close()
        second.close()


def test_no_free_port_gives_none_and_logs_virtualbox_line(caplog):
    taken = _taken()
    try:
        port = taken.getsockname()[1]
        with caplog.at_level("WARNING", logger="headbox.vrdp"):
            assert bind_listener(str(port), "127.0.0.1") is None
        assert f"TCP server failed to bind to a port: default 3389, range [{port}]" in caplog.text
    finally:
        taken.close()


def test_unresolvable_address_binds_nothing():
    assert bind_listener("5000", "no-such-host.invalid") is None


def test_empty_address_means_every_address_family_available():
    from services.vrdp.ports import _addresses
    families = {family for family, *_ in _addresses("", 5000)}
    assert socket.AF_INET in families
    if socket.has_ipv6:
        assert socket.AF_INET6 in families
    assert {sockaddr[0] for _, _, _, sockaddr in _addresses("", 5000)} <= {"0.0.0.0", "::"}
