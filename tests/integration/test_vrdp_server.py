"""The VRDP process without a VM, driven through real sockets: its launch spec and live `configure`, the port list's
bind rule, the control socket (status, disconnect), logon, multicon and the Client/Disable* switches."""

import os
import socket
import ssl
import struct
import subprocess
import time
import uuid

import pytest

from services.ipc import ops
from services.ipc.control import ControlClient, ControlError
from services.ipc.naming import endpoint
from services.ipc.spec import LaunchSpec
from services.ipc.vrde import VrdeConfig
from services.vrdp import mcs, x224
from services.vrdp.auth.simple import password_hash
from services.vrdp.pdu import activation, capabilities, info, share
from services.vrdp.tpkt import FrameKind, FrameReader, build_tpkt, parse_tpkt
from tests.support.vm_processes import start
from tests.unit.rdp_vectors import XFREERDP_CONNECT_INITIAL
from tests.unit.test_vrdp_connection import client_caps
from tests.waiting import free_port, wait_for


class Closed(Exception):
    """The server closed the connection."""


def tls_client_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what xfreerdp /cert:ignore does
    return context


class RdpClient:
    """A scripted RDP client over a real socket (TLS, xfreerdp's Connect-Initial), enough to log on,
    activate and ask for screen updates."""

    def __init__(self, port: int, user="john", password="secret", domain=""):
        self.port, self.user, self.password, self.domain = port, user, password, domain
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = self.raw
        self.reader = FrameReader(fastpath=True)
        self.user_id = None
        self.share_id = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes):
        self.sock.sendall(data)

    def frame(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the server")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLError, ConnectionError) as exc:
                raise Closed(str(exc)) from None
            if not data:
                raise Closed("connection closed")
            self.reader.feed(data)

    def indication(self, timeout=10.0):
        """The next Send Data Indication's payload on the I/O channel (skipping fast-path output)."""
        while True:
            frame = self.frame(timeout)
            if frame.kind is FrameKind.FASTPATH:
                continue
            pdu = mcs.parse_domain_pdu(x224.unwrap_data(frame.data))
            if isinstance(pdu, mcs.DisconnectProviderUltimatum):
                raise Closed("MCS disconnect provider ultimatum")
            return pdu.data

    def mcs(self, pdu):
        self.send(x224.wrap_data(mcs.build_domain_pdu(pdu)))

    def io(self, payload: bytes):
        self.mcs(mcs.SendDataRequest(self.user_id, mcs.IO_CHANNEL_ID, payload))

    def negotiate(self):
        request = x224.ConnectionRequest("tester", negotiation=x224.NegotiationRequest(x224.PROTOCOL_SSL))
        self.send(build_tpkt(x224.build_connection_request(request)))
        frame = self.frame()
        confirm = x224.parse_connection_confirm(parse_tpkt(frame.data))
        assert isinstance(confirm.result, x224.NegotiationResponse), confirm
        self.sock = tls_client_context().wrap_socket(self.raw, server_hostname=None)

    def logon(self):
        """Up to the Demand Active; raises Closed when the server turns the client away."""
        self.negotiate()
        self.send(XFREERDP_CONNECT_INITIAL)
        self.frame()  # Connect Response
        self.mcs(mcs.ErectDomainRequest())
        self.mcs(mcs.AttachUserRequest())
        attach = mcs.parse_domain_pdu(x224.unwrap_data(self.frame().data))
        self.user_id = attach.initiator
        for channel in (self.user_id, 1003, 1004, 1005, 1006, 1007):
            self.mcs(mcs.ChannelJoinRequest(self.user_id, channel))
            self.frame()
        client_info = info.ClientInfo(domain=self.domain, user_name=self.user, password=self.password)
        self.io(b"\x40\x00\x00\x00" + info.build_client_info(client_info))
        self.indication(timeout=30)  # licence (the answer waits for authentication)
        demand = capabilities.parse_demand_active(self.indication())
        self.share_id = demand.share_id
        return demand

    def activate(self):
        self.logon()
        self.io(capabilities.build_confirm_active(client_caps(32, True, 0xFFFF), self.share_id, self.user_id))
        self.indication()  # synchronize
        self.indication()  # cooperate
        self.io(activation.build_synchronize(1002, self.share_id, self.user_id))
        self.io(activation.build_control(activation.CTRLACTION_COOPERATE, 0, 0, self.share_id, self.user_id))
        self.io(activation.build_control(activation.CTRLACTION_REQUEST_CONTROL, 0, 0, self.share_id,
                                         self.user_id))
        self.indication()  # granted control
        self.io(activation.build_font_list(self.share_id, self.user_id))
        while share.parse_data_pdu(self.indication()).pdu_type2 != share.PDUTYPE2_FONTMAP:
            pass

    def refresh(self, x=0, y=0, w=64, h=64):
        payload = struct.pack("<B3xHHHH", 1, x, y, x + w - 1, y + h - 1)
        self.io(share.build_share_data(self.share_id, self.user_id, share.PDUTYPE2_REFRESH_RECT, payload))

    def graphics(self, timeout=5.0) -> int:
        """Bytes of fast-path output (bitmap updates) received within `timeout`."""
        received = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                frame = self.frame(max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                break
            if frame.kind is FrameKind.FASTPATH:
                received += len(frame.data)
                if received:
                    return received
        return received

    def closed_by_server(self, timeout=10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.frame(max(0.05, deadline - time.monotonic()))
            except Closed:
                return True
            except TimeoutError:
                return False
            except Exception:  # a decode error after a close_notify still means closed
                return True
        return False


def taken_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


class VrdpProcess:
    """The RDP server of a VM without a VM, told by a launch spec, its log in a file."""

    def __init__(self, tmp_path, **fields):
        self.tmp_path = tmp_path
        self.vm_id = "vrdp" + uuid.uuid4().hex[:6]
        self.log_path = tmp_path / "vrdp.log"
        self.config = VrdeConfig(vm_name="test", vm_uuid=str(uuid.uuid4()), enabled=True, address="127.0.0.1",
                                 state_dir=str(tmp_path / "state"), **fields)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
        self.log_file = self.log_path.open("w")
        self.process = start("vrdp", LaunchSpec(self.vm_id, vrde=self.config), tmp_path, env=self.env,
                             stdout=self.log_file, stderr=self.log_file)
        self.control_endpoint = endpoint(self.vm_id, "control-vrdp")
        wait_for(lambda: os.path.exists(self.control_endpoint[len("ipc://"):]), 20, "control socket",
                 [self.process])

    def call(self, message) -> dict:
        client = ControlClient(self.control_endpoint, timeout_ms=5000)
        try:
            return client.call(message)
        finally:
            client.close()

    def status(self):
        return self.call(ops.Status())

    def update(self, **changes):
        """New settings, applied before this returns (as modifyvm's)."""
        for name, value in changes.items():
            setattr(self.config, name, value)
        self.call(ops.Configure(config=self.config.to_dict()))

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


@pytest.fixture
def vrdp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # endpoint() in this process too
    started = []

    def start(**fields):
        process = VrdpProcess(tmp_path, **fields)
        started.append(process)
        return process
    yield start
    for process in started:
        process.stop()
        assert "Traceback" not in process.log_path.read_text()


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


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
