"""The VRDP process without a VM, driven through real sockets: its launch spec and live `configure`, the port list's
bind rule, the control socket (status, disconnect), logon, multicon and the Client/Disable* switches."""

import os
import time

import pytest

from services.ipc import ops
from services.ipc.control import ControlError
from services.vrdp.auth.simple import password_hash
from tests.support.rdp_test_client import Closed, RdpClient
from tests.support.vrdp_process import listening, taken_port
from tests.waiting import free_port, wait_for


def test_first_free_port_of_the_list_and_status(vrdp):
    first, second = taken_port(), taken_port()
    try:
        third = free_port()
        ports = f"{first.getsockname()[1]},{second.getsockname()[1]},{third}"
        server = vrdp(ports=ports)
        status = wait_for(lambda: (s := server.status())["port"] and s, 10, "a bound port", [server.process])
        assert status["port"] == third and status["pid"] == server.process.pid and status["clients"] == []
        assert oct(os.stat(server.control_endpoint[len("ipc://"):]).st_mode & 0o777) == "0o600"
        assert f"TCP server listening on port {third} (IPv4)." in server.log()
    finally:
        first.close()
        second.close()


def test_no_free_port_keeps_running_with_port_0_and_retries_on_change(vrdp):
    taken = taken_port()
    try:
        port = taken.getsockname()[1]
        server = vrdp(ports=str(port))
        wait_for(lambda: "failed to bind" in server.log(), 10, "bind failure logged", [server.process])
        assert server.status()["port"] == 0
        assert f"TCP server failed to bind to a port: default 3389, range [{port}]" in server.log()
        new = free_port()
        server.update(ports=f"{port},{new}")
        wait_for(lambda: server.status()["port"] == new, 10, "bound after the change", [server.process])
        assert listening(new)
    finally:
        taken.close()


def test_configure_moves_the_listener_at_once_and_a_bad_one_is_refused(vrdp):
    old, new = free_port(), free_port()
    server = vrdp(ports=str(old))
    wait_for(lambda: server.status()["port"] == old, 10, "first port", [server.process])
    server.update(ports=str(new))
    assert server.status()["port"] == new and not listening(old)     # applied before the reply
    with pytest.raises(ControlError, match="VRDE configuration not applied: .*auth_type 'kerberos'"):
        server.call(ops.Configure(config={**server.config.to_dict(), "auth_type": "kerberos"}))
    assert "Traceback" not in server.log()
    assert server.status()["port"] == new and listening(new)
    server.update(enabled=False)
    assert server.status()["port"] == 0 and not listening(new)


def test_logon_status_disconnect_and_blank_screen_without_a_vm(vrdp):
    port = free_port()
    server = vrdp(ports=str(port), auth_type="external", auth_library="VBoxAuthSimple",
                  users={"john": password_hash("secret")}, features={"Client/DisableAudio": "1"})
    wait_for(lambda: server.status()["port"] == port, 10, "listening", [server.process])
    wrong = RdpClient(port, password="guess")
    with pytest.raises(Closed):
        wrong.logon()
    wrong.close()
    assert "AUTH: Access denied." in server.log()
    client = RdpClient(port)
    client.activate()
    assert client.graphics() > 0  # the whole (black) screen after activation
    client.refresh()
    assert client.graphics() > 0
    [entry] = server.status()["clients"]
    assert entry["user"] == "john" and entry["address"].startswith("127.0.0.1:") and entry["since"]
    assert entry["disabled"] == ["Client/DisableAudio"] and entry["channels"]["withheld"] == ["rdpsnd"]
    assert server.call(ops.Disconnect())["disconnected"] == 1
    assert client.closed_by_server()
    wait_for(lambda: server.status()["clients"] == [], 10, "client gone", [server.process])
    # Removing the switch enables the channel again for the next client.
    server.update(features={})
    time.sleep(1.2)
    again = RdpClient(port)
    again.activate()
    assert server.status()["clients"][0]["disabled"] == []
    again.close()


def test_what_a_client_sends_cannot_forge_log_lines(vrdp):
    """A newline in the user name once wrote a forged 'Access granted' line; escapes in the domain
    went to the log raw; a NUL cut the user name short ('alice\\0evil' logged on as alice)."""
    port = free_port()
    server = vrdp(ports=str(port), auth_type="external", auth_library="VBoxAuthSimple",
                  users={"alice": password_hash("secret")})
    wait_for(lambda: server.status()["port"] == port, 10, "listening", [server.process])
    forged = "mallory\n2026-12-07 12:00:00,000 headbox.vrdp INFO AUTH: Access granted."
    for user, domain in ((forged, "\x1b[2J\x1b[31mred"), ("alice\0evil", "")):
        client = RdpClient(port, user=user, password="secret", domain=domain)
        with pytest.raises(Closed):
            client.logon()
        client.close()
    wait_for(lambda: "contains a NUL" in server.log(), 10, "the NUL refused", [server.process])
    lines = server.log().splitlines()
    assert not any(line.startswith("2026-12-07 12:00:00") for line in lines), lines
    assert not any("\x1b" in line for line in lines)
    assert "Access granted" not in "\n".join(line for line in lines if "mallory" not in line)
    assert any("mallory\\x0a2026-12-07" in line for line in lines), lines
    assert any("\\x1b[2J" in line for line in lines), lines
    assert server.status()["clients"] == []


def test_multicon_off_refuses_the_second_and_reusecon_replaces_the_first(vrdp):
    port = free_port()
    server = vrdp(ports=str(port))
    wait_for(lambda: server.status()["port"] == port, 10, "listening", [server.process])
    first = RdpClient(port)
    first.activate()
    second = RdpClient(port)
    with pytest.raises(Closed):
        second.logon()
    second.close()
    assert "AUTH: Multiple connections are not enabled. Access denied." in server.log()
    assert len(server.status()["clients"]) == 1
    server.update(reusecon=True)
    time.sleep(1.2)
    third = RdpClient(port)
    third.activate()
    assert first.closed_by_server()
    assert "AUTH: Multiple connections are not enabled. Disconnecting existing client." in server.log()
    wait_for(lambda: [c["id"] for c in server.status()["clients"]] == [3], 10, "only the third", [server.process])
    server.update(multicon=True, reusecon=False)
    time.sleep(1.2)
    fourth = RdpClient(port)
    fourth.activate()
    assert len(server.status()["clients"]) == 2
    third.refresh()
    fourth.refresh()
    assert third.graphics() > 0 and fourth.graphics() > 0
    third.close()
    fourth.close()


def test_disable_display_sends_no_graphics_but_activates(vrdp):
    port = free_port()
    server = vrdp(ports=str(port), features={"Client/DisableDisplay": "1"})
    wait_for(lambda: server.status()["port"] == port, 10, "listening", [server.process])
    client = RdpClient(port)
    client.activate()
    client.refresh()
    assert client.graphics(2.0) == 0
    assert server.status()["clients"][0]["disabled"] == ["Client/DisableDisplay"]
    client.close()
