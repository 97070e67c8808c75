"""xfreerdp under Xvfb against the VRDP server of a SeaBIOS VM (booted once for the module): VBoxAuthSimple
and the host's PAM refuse a wrong password and admit the right one, null admits anyone, and a port list
whose first ports are taken binds the next free one, which `status` reports."""

import dataclasses
import io
import os
import socket
import subprocess
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.naming import endpoint
from services.ipc.spec import LaunchSpec
from services.ipc.vrde import VrdeConfig
from services.vrdp.auth.simple import password_hash
from tests.conftest import HOST_USER_PASSWORD
from tests.support import vm_processes
from tests.support.rdp_clients import guest_frame
from tests.support.x_display import Display, stop
from tests.waiting import free_port, wait_for


class Vm:
    """A SeaBIOS VM (vCPU process only) and an X server for the clients."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.vm_id = "va" + uuid.uuid4().hex[:6]
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp)}
        self.logs = []
        self.spec = LaunchSpec(self.vm_id, memory_mib=64, accel="tcg", device_process=False)
        self.vcpu = vm_processes.start("vcpu", self.spec, tmp, env=self.env, stdout=self.log("vcpu"),
                                       stderr=subprocess.STDOUT)
        display_socket = endpoint(self.vm_id, "display")[len("ipc://"):]
        wait_for(lambda: os.path.exists(display_socket), 30, "vCPU display channel", [self.vcpu])
        self.display = Display(tmp, "1600x900x24", env=self.env)
        self.x_env = self.display.env
        self.vrdp = None
        self.clients = []

    def log(self, name):
        file = (self.tmp / f"{name}.log").open("a+")
        self.logs.append(file)
        return file

    def start_vrdp(self, **fields) -> str:
        """A VRDP process with this configuration; returns the path of its log."""
        self.stop_vrdp()
        config = VrdeConfig(vm_name="auth-test", vm_uuid=str(uuid.uuid4()), enabled=True, address="127.0.0.1",
                            state_dir=str(self.tmp / "vrdp-state"), **fields)
        name = f"vrdp-{uuid.uuid4().hex[:4]}"
        self.vrdp_log = self.tmp / f"{name}.log"
        self.vrdp = vm_processes.start("vrdp", dataclasses.replace(self.spec, vrde=config), self.tmp, env=self.env,
                                       stdout=self.log(name), stderr=subprocess.STDOUT)
        wait_for(lambda: self.status()["port"], 20, "VRDP listening", [self.vrdp])
        return self.vrdp_log

    def status(self):
        path = endpoint(self.vm_id, "control-vrdp")
        if not os.path.exists(path[len("ipc://"):]):
            return {"port": 0}
        client = ControlClient(path, timeout_ms=3000)
        try:
            return client.call(ops.Status())
        finally:
            client.close()

    def vrdp_text(self) -> str:
        for file in self.logs:
            file.flush()
        return self.vrdp_log.read_text()

    def stop_vrdp(self):
        for client in self.clients:
            stop(client)
        self.clients = []
        if self.vrdp is not None:
            stop(self.vrdp)
            assert "Traceback" not in self.vrdp_text()
            self.vrdp = None

    def xfreerdp(self, port, user, password, title="FreeRDP", size="720x400"):
        client = subprocess.Popen(["xfreerdp", f"/v:127.0.0.1:{port}", "/cert:ignore", "/sec:tls", "/bpp:32",
                                   f"/size:{size}", f"/u:{user}", f"/p:{password}", f"/title:{title}",
                                   "-auto-reconnect"],
                                  env=self.x_env, stdin=subprocess.DEVNULL, stdout=self.log("xfreerdp"),
                                  stderr=subprocess.STDOUT)
        self.clients.append(client)
        return client

    def window(self, title, processes=()):
        def find():
            found = subprocess.run(["xdotool", "search", "--name", f"^{title}$"], check=False, env=self.x_env,
                                   capture_output=True, text=True)
            return found.stdout.split()[0] if found.returncode == 0 and found.stdout.split() else None
        return wait_for(find, 30, f"window {title}", [*processes, self.vrdp, self.vcpu])

    def shows_guest(self, window_id, processes=(), timeout=40):
        """Waits until the window equals the guest framebuffer pixel for pixel."""
        last = {}

        def matches():
            before = guest_frame(self.vm_id)
            shot = subprocess.run(["import", "-window", window_id, "png:-"], check=False, env=self.x_env,
                                  capture_output=True)
            after = guest_frame(self.vm_id)
            if shot.returncode != 0 or not (before == after).all() or not before[..., :3].any():
                return False
            image = np.asarray(Image.open(io.BytesIO(shot.stdout)).convert("RGB"))
            last["shot"], last["guest"] = image, before
            return image.shape[:2] == before.shape[:2] and (image == before[..., 2::-1]).all()
        try:
            wait_for(matches, timeout, "client window equal to the guest framebuffer",
                     [*processes, self.vrdp, self.vcpu])
        except AssertionError:
            if "shot" in last:
                Image.fromarray(last["shot"]).save(self.tmp / f"client-{window_id}.png")
                Image.fromarray(np.ascontiguousarray(last["guest"][..., 2::-1])).save(self.tmp / "guest.png")
            raise

    def close(self):
        self.stop_vrdp()
        self.display.close()
        control = ControlClient(endpoint(self.vm_id, "control-vcpu"), timeout_ms=5000)
        try:
            control.call(ops.PowerOff())
        except Exception:  # the VM may be gone already; it is stopped below in any case
            pass
        finally:
            control.close()
        try:
            self.vcpu.wait(30)
        finally:
            stop(self.vcpu)
            for file in self.logs:
                file.close()


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vrdp-auth")
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(tmp)  # endpoint() and shm_name() in this process too
    machine = Vm(tmp)
    try:
        yield machine
    finally:
        machine.close()
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old


def refused(vm, client, timeout=60):
    """The client gave up with a non-zero exit code (xfreerdp reports the closed connection)."""
    wait_for(lambda: client.poll() is not None, timeout, "xfreerdp to give up", [vm.vrdp, vm.vcpu])
    return client.returncode != 0


def admitted(vm, port, user, password):
    title = "ok-" + uuid.uuid4().hex[:6]
    client = vm.xfreerdp(port, user, password, title)
    vm.shows_guest(vm.window(title, [client]), [client])
    stop(client)
    vm.clients.remove(client)


def test_vboxauthsimple_refuses_a_wrong_password_and_admits_the_right_one(vm):
    port = free_port()
    vm.start_vrdp(ports=str(port), auth_type="external", auth_library="VBoxAuthSimple",
                  users={"john": password_hash("secret")})
    assert refused(vm, vm.xfreerdp(port, "john", "guess"))
    log = vm.vrdp_text()
    assert "AUTH: User: [john]. Domain: []. Authentication type: [External]" in log
    assert "AUTH: external authentication module returned 'access denied'" in log
    assert "AUTH: Access denied." in log
    assert "active at" not in log  # no graphics for the refused client
    admitted(vm, port, "john", "secret")
    assert "AUTH: Access granted." in vm.vrdp_text()




def test_pam_refuses_a_wrong_password_and_admits_the_right_one(vm, host_user):
    port = free_port()
    vm.start_vrdp(ports=str(port), auth_type="external")  # VBoxAuth, the default library: the host's PAM
    assert refused(vm, vm.xfreerdp(port, host_user, "wrong"))
    assert f"AUTH: User: [{host_user}]" in vm.vrdp_text() and "AUTH: Access denied." in vm.vrdp_text()
    admitted(vm, port, host_user, HOST_USER_PASSWORD)
    assert "AUTH: external authentication module returned 'access granted'" in vm.vrdp_text()


def test_null_admits_anyone(vm):
    port = free_port()
    vm.start_vrdp(ports=str(port), auth_type="null")
    admitted(vm, port, "anybody", "anything")
    assert "Authentication type: [Null]" in vm.vrdp_text()


def test_guest_auth_is_refused(vm):
    port = free_port()
    vm.start_vrdp(ports=str(port), auth_type="guest")
    assert refused(vm, vm.xfreerdp(port, "john", "secret"))
    assert "guest authentication is not supported: no Guest Additions" in vm.vrdp_text()


def test_a_port_list_binds_the_first_free_port(vm):
    taken = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        taken.append(sock)
    try:
        free = free_port()
        ports = ",".join(str(s.getsockname()[1]) for s in taken) + f",{free}"
        vm.start_vrdp(ports=ports)
        assert vm.status()["port"] == free
        admitted(vm, free, "anybody", "x")
        assert f"TCP server listening on port {free} (IPv4)." in vm.vrdp_text()
    finally:
        for sock in taken:
            sock.close()


def test_status_lists_the_logged_on_client(vm):
    port = free_port()
    vm.start_vrdp(ports=str(port))
    title = "st-" + uuid.uuid4().hex[:6]
    client = vm.xfreerdp(port, "alice", "x", title)
    vm.window(title, [client])
    [entry] = wait_for(lambda: vm.status()["clients"], 20, "client in status", [client])
    assert entry["user"] == "alice" and entry["address"].startswith("127.0.0.1:")
    started = time.monotonic()
    client_control = ControlClient(endpoint(vm.vm_id, "control-vrdp"), timeout_ms=3000)
    try:
        assert client_control.call(ops.Disconnect()) == {"disconnected": 1}
    finally:
        client_control.close()
    wait_for(lambda: client.poll() is not None, 30, "xfreerdp to end after disconnect", [vm.vrdp])
    assert time.monotonic() - started < 30
