"""The manager daemon without VMs: start on demand (also by two clients at once), the socket's mode,
malformed requests, idle exit, the pointer file of a deep home, and CurveZMQ refusals on TCP."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import msgpack
import pytest
import zmq
import zmq.auth

from services.manager import curve
from services.manager.client import (
    ManagerClient,
    connect_or_start,
    daemon_running,
    local_endpoint,
)
from services.manager.errors import E_FAIL, E_INVALIDARG, ManagerError
from tests.waiting import free_port
from tests.waiting import wait_for as wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gone(pid):
    """Exited (a zombie counts: the daemon is our child only in tests, a CLI's exits first)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def shutdown(home):
    with ManagerClient(home=str(home), timeout_ms=5000) as client:
        client.request("shutdown")
    wait_until(lambda: not daemon_running(str(home)), 10, "the manager exits")


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("VBOX_USER_HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    yield home
    if daemon_running(str(home)):
        shutdown(home)


def test_started_on_demand_answers_ping_with_a_private_socket(home):
    client = connect_or_start(str(home))
    try:
        info = client.request("ping")
    finally:
        client.close()
    assert info["home"] == str(home) and info["pid"] > 0
    sock = home / "manager.sock"
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    assert (home / "manager.pid").read_text().strip() == str(info["pid"])


def test_two_clients_starting_it_at_once_reach_one_daemon(home):
    code = ("from services.manager.client import connect_or_start; "
            f"print(connect_or_start({str(home)!r}).request('ping')['pid'])")
    racers = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
              for _ in range(3)]
    pids = {racer.communicate(timeout=60)[0].strip() for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert len(pids) == 1 and pids.pop().isdigit()


def test_malformed_requests_get_invalidarg_and_the_daemon_carries_on(home):
    client = connect_or_start(str(home))
    raw = zmq.Context.instance().socket(zmq.REQ)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.RCVTIMEO, 5000)
    raw.connect(local_endpoint(str(home)))
    try:
        for payload in (b"\xc1garbage", msgpack.packb([1, 2]), msgpack.packb({"v": 99, "op": "ping"}),
                        msgpack.packb({"v": 1, "op": "ping", "unexpected": 1}),
                        msgpack.packb({"v": 1, "op": "no-such-op"}), msgpack.packb({"v": 1, "op": "job", "job": 7})):
            raw.send(payload)
            reply = msgpack.unpackb(raw.recv(), raw=False)
            assert reply["ok"] is False, payload
            assert reply["error"]["code"] in (E_INVALIDARG, "VBOX_E_OBJECT_NOT_FOUND"), reply
            assert "\n" not in reply["error"]["message"]
        with pytest.raises(ManagerError) as error:
            client.request("startvm", vm=12)
        assert error.value.code == E_INVALIDARG
        assert client.request("ping")["pid"] > 0
    finally:
        raw.close()
        client.close()


def test_exits_when_idle(home, monkeypatch):
    monkeypatch.setenv("HEADBOX_IDLE_EXIT", "1.5")
    client = connect_or_start(str(home))
    pid = client.request("ping")["pid"]
    client.close()
    started = time.monotonic()
    wait_until(lambda: not daemon_running(str(home)), 15, "idle exit")
    assert time.monotonic() - started >= 1.0
    assert not (home / "manager.sock").exists()
    assert "idle for 1.5 s" in (home / "manager.log").read_text()
    wait_until(lambda: gone(pid), 10, "the idle manager's process ends")


def test_a_home_too_deep_for_a_unix_socket_gets_a_pointer_file(tmp_path, monkeypatch):
    run = tempfile.mkdtemp(prefix="hb-run-", dir="/tmp")   # pytest's own folders are deep already
    monkeypatch.setenv("XDG_RUNTIME_DIR", run)
    home = tmp_path / ("d" * 60) / ("e" * 60)
    client = connect_or_start(str(home))
    try:
        assert client.request("ping")["home"] == str(home)
        pointer = (home / "manager.endpoint").read_text().strip()
        assert pointer.startswith("ipc://" + run) and len(pointer) - 6 <= 107
        assert oct(os.stat(pointer[6:]).st_mode & 0o777) == "0o600"
        assert oct(os.stat(os.path.dirname(pointer[6:])).st_mode & 0o777) == "0o700"
    finally:
        client.close()
        shutdown(home)
        shutil.rmtree(run, ignore_errors=True)


def test_tcp_endpoint_admits_only_authorized_curve_keys(home, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    log_path = tmp_path / "manager.err"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "services.manager", "--home", str(home), "--foreground",
                                   "--tcp", address], cwd=REPO, stderr=log)
    try:
        wait_until(lambda: (home / "curve" / "server.key").exists() and daemon_running(str(home)), 20,
                   "the manager with its server key")
        assert oct((home / "curve" / "server.key_secret").stat().st_mode & 0o777) == "0o600"
        server_public, _ = zmq.auth.load_certificate(str(home / "curve" / "server.key"))
        client_public, client_secret = zmq.curve_keypair()
        curve.authorize(str(home), client_public)
        assert oct((home / "curve" / "authorized_keys").stat().st_mode & 0o777) == "0o600"

        # A plain (NULL-mechanism) client and one with an unknown key get no reply at all.
        for keys in (None, zmq.curve_keypair()):
            stranger = ManagerClient(endpoint=address, timeout_ms=1500,
                                     curve_server_key=server_public if keys else None, curve_client_keys=keys)
            with pytest.raises(ManagerError) as error:
                stranger.request("ping")
            assert error.value.code == E_FAIL and "did not answer" in error.value.message
            stranger.close()
        wait_until(lambda: "refused a CurveZMQ client" in log_path.read_text()
                   and "CurveZMQ handshake failed" in log_path.read_text(), 10, "refusals logged")

        friend = ManagerClient(endpoint=address, timeout_ms=5000, curve_server_key=server_public,
                               curve_client_keys=(client_public, client_secret))
        assert friend.request("ping")["pid"] == daemon.pid
        friend.close()
    finally:
        daemon.terminate()
        daemon.wait(15)


def test_a_foreground_session_is_reported_and_forgotten(home):
    client = connect_or_start(str(home))
    try:
        uuid = client.request("createvm", name="fg", register=True)["uuid"]
        client.request("modifyvm", vm="fg", changes={"memory": 32})
        spec = client.request("launchspec", vm="fg")
        assert spec["vm_id"] == uuid and spec["memory_mib"] == 32
        client.request("session", vm="fg", action="open", pid=os.getpid(), vrde_port_bound=5000)
        assert client.request("vmstate", vm=uuid) == {"state": "Running", "vrde_port_bound": 5000,
                                                      "pid_vcpu": os.getpid()}
        assert client.request("list", what="runningvms") == [{"name": "fg", "uuid": uuid}]
        for op, fields in (("startvm", {"type": "headless"}), ("modifyvm", {"changes": {"memory": 64}})):
            with pytest.raises(ManagerError) as error:
                client.request(op, vm="fg", **fields)
            assert error.value.code == "VBOX_E_INVALID_VM_STATE", op
        client.request("session", vm="fg", action="close", pid=os.getpid())
        assert client.request("vmstate", vm="fg")["state"] == "PoweredOff"

        # A VBoxHeadless that dies without closing its session is noticed.
        short = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
        client.request("session", vm="fg", action="open", pid=short.pid)
        short.wait()
        wait_until(lambda: client.request("vmstate", vm="fg")["state"] == "PoweredOff", 5, "session gone")
        with pytest.raises(ManagerError) as error:
            client.request("session", vm="fg", action="sideways", pid=1)
        assert error.value.code == E_INVALIDARG
    finally:
        client.close()


def test_clients_arriving_while_the_daemon_idles_out_are_served(home, monkeypatch):
    # A daemon that exits after 0.3 s idle, and clients coming every 0.2..0.45 s: some find it just
    # leaving, and must get a new one rather than a lost request.
    monkeypatch.setenv("HEADBOX_IDLE_EXIT", "0.3")
    pids = set()
    for index in range(12):
        client = connect_or_start(str(home))
        try:
            pids.add(client.request("ping", timeout_ms=5000)["pid"])
        finally:
            client.close()
        time.sleep(0.2 + 0.025 * index)
    assert len(pids) >= 2      # it did idle out in between
