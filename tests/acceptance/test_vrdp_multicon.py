"""Several xfreerdp clients under Xvfb on one VM (the Linux test guest, booted once for the module):
with multicon both windows show the same guest screen after a line typed in one of them; without it
the second client is refused; with reusecon the second replaces the first; DisableInput ignores keys."""

import dataclasses
import io
import os
import subprocess
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from services.demo.linux_iso import linux_iso
from services.headless import VmProcesses
from services.ipc import ops
from services.ipc.control import ControlClient, call
from services.ipc.naming import endpoint
from services.ipc.spec import Drive, LaunchSpec
from services.ipc.vrde import VrdeConfig
from tests.support import vm_processes
from tests.support.rdp_clients import guest_frame
from tests.support.x_display import Display, stop
from tests.waiting import free_port, wait_for

BOOT_TIMEOUT = 300


class Guest:
    """The Linux test guest with its device process, a VRDP process per test, and an X server."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.vm_id = "vm" + uuid.uuid4().hex[:6]
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp)}
        self.serial = tmp / "serial.log"
        self.processes = VmProcesses(LaunchSpec(vm_id=self.vm_id, memory_mib=256, accel="tcg",
                                                drives=[Drive(1, 0, "dvd", str(linux_iso()))],
                                                serial_log=str(self.serial)))
        self.processes.start()
        self.logs = []
        self.display = Display(tmp, env=self.env)
        self.x_env = self.display.env
        self.vrdp = None
        self.clients = []
        deadline = time.monotonic() + BOOT_TIMEOUT
        while "guest# " not in self.serial_text():
            assert time.monotonic() < deadline, "the guest did not reach its shell:\n" + self.serial_text()[-1500:]
            time.sleep(0.5)
        # tty1's shell prints its prompt on the VGA console too.
        wait_for(lambda: any("guest#" in row for row in self.screen_text()), 60, "prompt on the VGA console")

    def serial_text(self) -> str:
        return self.serial.read_bytes().decode("latin-1") if self.serial.exists() else ""

    def screen_text(self) -> list[str]:
        control = ControlClient(endpoint(self.vm_id, "control-vcpu"), timeout_ms=5000)
        try:
            rows = control.call(ops.ScreenText())["rows"]
        finally:
            control.close()
        assert rows is not None, "the guest is expected in a text mode"
        return rows

    def log(self, name):
        file = (self.tmp / f"{name}.log").open("a+")
        self.logs.append(file)
        return file

    def start_vrdp(self, **fields) -> int:
        self.stop_vrdp()
        port = free_port()
        self.config = VrdeConfig.listening(port, "multicon", vm_uuid=str(uuid.uuid4()),
                                           state_dir=str(self.tmp / "vrdp-state"), **fields)
        name = f"vrdp-{uuid.uuid4().hex[:4]}"
        self.vrdp_log = self.tmp / f"{name}.log"
        spec = dataclasses.replace(self.processes.spec, vrde=self.config)
        self.vrdp = vm_processes.start("vrdp", spec, self.tmp, env=self.env, stdout=self.log(name),
                                       stderr=subprocess.STDOUT)
        wait_for(lambda: self.status()["port"] == port, 20, "VRDP listening", [self.vrdp])
        return port

    def configure(self, config: VrdeConfig) -> None:
        """New settings through the server's control socket, applied before the reply (as the manager's)."""
        call(endpoint(self.vm_id, "control-vrdp"), ops.Configure(config=config.to_dict()), timeout_ms=20000)
        self.config = config

    def status(self):
        path = endpoint(self.vm_id, "control-vrdp")
        if not os.path.exists(path[len("ipc://"):]):
            return {"port": 0, "clients": []}
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

    def xfreerdp(self, port, title):
        client = subprocess.Popen(["xfreerdp", f"/v:127.0.0.1:{port}", "/cert:ignore", "/sec:tls", "/bpp:32",
                                   "/size:720x400", "/u:tester", "/p:x", f"/title:{title}", "-auto-reconnect"],
                                  env=self.x_env, stdin=subprocess.DEVNULL, stdout=self.log("xfreerdp"),
                                  stderr=subprocess.STDOUT)
        self.clients.append(client)
        return client

    def xdotool(self, *args):
        result = subprocess.run(["xdotool", *args], env=self.x_env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"xdotool {' '.join(args)}: {result.stderr.strip()}"
        return result.stdout

    def window(self, title, client):
        def find():
            found = subprocess.run(["xdotool", "search", "--name", f"^{title}$"], check=False, env=self.x_env,
                                   capture_output=True, text=True)
            return found.stdout.split()[0] if found.returncode == 0 and found.stdout.split() else None
        return wait_for(find, 40, f"window {title}", [client, self.vrdp])

    def type_line(self, window, text):
        self.xdotool("mousemove", "--window", window, "5", "5")
        self.xdotool("windowfocus", "--sync", window)
        self.xdotool("type", "--delay", "60", text)
        self.xdotool("key", "--delay", "60", "Return")

    def window_image(self, window):
        shot = subprocess.run(["import", "-window", window, "png:-"], check=False, env=self.x_env,
                              capture_output=True)
        if shot.returncode != 0:
            return None
        return np.asarray(Image.open(io.BytesIO(shot.stdout)).convert("RGB"))

    def all_show_guest(self, windows, clients, timeout=40):
        """Every window equals the guest framebuffer pixel for pixel (the frame steady meanwhile)."""
        def matches():
            before = guest_frame(self.vm_id)
            images = [self.window_image(w) for w in windows]
            after = guest_frame(self.vm_id)
            if not (before == after).all() or any(i is None for i in images):
                return False
            expected = before[..., 2::-1]
            return all(i.shape[:2] == before.shape[:2] and (i == expected).all() for i in images)
        wait_for(matches, timeout, f"{len(windows)} windows equal to the guest framebuffer", [*clients, self.vrdp])

    def close(self):
        self.stop_vrdp()
        self.display.close()
        self.processes.kill()
        for file in self.logs:
            file.close()


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vrdp-multicon")
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(tmp)  # endpoint() and shm_name() in this process too
    machine = Guest(tmp)
    try:
        yield machine
    finally:
        machine.close()
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old


def test_multicon_clients_share_screen_and_keyboard(guest):
    port = guest.start_vrdp(multicon=True)
    one, two = guest.xfreerdp(port, "one"), guest.xfreerdp(port, "two")
    windows = [guest.window("one", one), guest.window("two", two)]
    guest.all_show_guest(windows, [one, two])
    assert len(guest.status()["clients"]) == 2
    before = guest_frame(guest.vm_id)
    guest.type_line(windows[0], "echo typed-in-one")
    wait_for(lambda: any(row.startswith("typed-in-one") for row in guest.screen_text()), 30,
             "the line typed in window one run by the guest", [one, two])
    assert not (guest_frame(guest.vm_id) == before).all()
    guest.all_show_guest(windows, [one, two])  # the change reached both clients
    guest.type_line(windows[1], "echo typed-in-two")
    wait_for(lambda: any(row.startswith("typed-in-two") for row in guest.screen_text()), 30,
             "the line typed in window two run by the guest", [one, two])
    guest.all_show_guest(windows, [one, two])


def test_without_multicon_the_second_client_is_refused(guest):
    port = guest.start_vrdp()
    one = guest.xfreerdp(port, "first")
    window = guest.window("first", one)
    guest.all_show_guest([window], [one])
    two = guest.xfreerdp(port, "second")
    wait_for(lambda: two.poll() is not None, 60, "the second xfreerdp to give up", [one, guest.vrdp])
    assert two.returncode != 0
    assert "AUTH: Multiple connections are not enabled. Access denied." in guest.vrdp_text()
    assert one.poll() is None and len(guest.status()["clients"]) == 1
    guest.all_show_guest([window], [one])


def test_reusecon_replaces_the_first_client(guest):
    port = guest.start_vrdp(reusecon=True)
    one = guest.xfreerdp(port, "old")
    guest.all_show_guest([guest.window("old", one)], [one])
    two = guest.xfreerdp(port, "new")
    window = guest.window("new", two)
    wait_for(lambda: one.poll() is not None, 30, "the first xfreerdp to be disconnected", [two, guest.vrdp])
    assert "AUTH: Multiple connections are not enabled. Disconnecting existing client." in guest.vrdp_text()
    guest.all_show_guest([window], [two])
    [entry] = guest.status()["clients"]
    assert entry["id"] == 2


def test_disable_input_ignores_that_clients_keys(guest):
    port = guest.start_vrdp(multicon=True, features={"Client/DisableInput": "1"})
    one = guest.xfreerdp(port, "mute")
    window = guest.window("mute", one)
    guest.all_show_guest([window], [one])
    guest.type_line(window, "echo should-not-arrive")
    time.sleep(3)
    assert not any("should-not-arrive" in row for row in guest.screen_text())
    assert guest.status()["clients"][0]["disabled"] == ["Client/DisableInput"]
    # Removing the switch enables input again for the next client.
    guest.configure(dataclasses.replace(guest.config, features={}))
    two = guest.xfreerdp(port, "speaks")
    window_two = guest.window("speaks", two)
    guest.all_show_guest([window_two], [two])
    guest.type_line(window_two, "echo does-arrive")
    wait_for(lambda: any(row.startswith("does-arrive") for row in guest.screen_text()), 30,
             "the line typed by the second client", [two])
