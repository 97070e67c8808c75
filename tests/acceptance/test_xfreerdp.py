"""xfreerdp against the VRDP server of a VM showing SeaBIOS: the client window, captured under Xvfb,
matches the guest framebuffer pixel for pixel at 32 bpp over TLS."""

import io
import os
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
from PIL import Image

from services.devices.display.surface import frame_view
from services.ipc.naming import endpoint, shm_name
from services.ipc.shm import SharedRegion
from services.vcpu.service import ControlClient


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check, timeout, what, processes=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, f"{process.args[0]} exited with {process.returncode} ({what})"
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


def start_xvfb(log):
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,), stdout=log, stderr=log)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        display = pipe.readline().strip()
    assert display, "Xvfb did not report its display"
    return xvfb, f":{display}"


def stop(process):
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def guest_frame(vm_id):
    region = SharedRegion.open(shm_name(vm_id, "surface"))
    try:
        return frame_view(region).copy()
    finally:
        region.close()


def test_xfreerdp_tls_32bpp_shows_the_guest_screen(tmp_path, monkeypatch):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    vm_id = "rdp" + uuid.uuid4().hex[:6]
    port = free_port()
    logs = {name: (tmp_path / f"{name}.log").open("w+")  # closed in the finally below
            for name in ("vcpu", "vrdp", "xvfb", "xfreerdp")}
    vcpu = vrdp = xvfb = client = None
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # endpoint() and shm_name() in this process too
    try:
        vcpu = subprocess.Popen([sys.executable, "-m", "services.vcpu", "--vm-id", vm_id, "--accel", "tcg",
                                 "--memory", "64"], env=env, stdout=logs["vcpu"], stderr=logs["vcpu"])
        display_socket = endpoint(vm_id, "display")[len("ipc://"):]
        wait_for(lambda: os.path.exists(display_socket), 30, "vCPU display channel", [vcpu])
        vrdp = subprocess.Popen([sys.executable, "-m", "services.vrdp", "--vm-id", vm_id, "--port", str(port),
                                 "--state-dir", str(tmp_path / "vrdp-state")],
                                env=env, stdout=logs["vrdp"], stderr=logs["vrdp"])

        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, 30, "VRDP listener", [vrdp])
        assert oct(os.stat(tmp_path / "vrdp-state" / "vrdp-server.key").st_mode & 0o777) == "0o600"
        xvfb, display = start_xvfb(logs["xvfb"])
        home = tmp_path / "home"
        home.mkdir()
        x_env = {**env, "DISPLAY": display, "HOME": str(home)}
        client = subprocess.Popen(["xfreerdp", f"/v:127.0.0.1:{port}", "/cert:ignore", "/sec:tls", "/bpp:32",
                                   "/size:720x400", "/u:tester", "/p:secret"],
                                  env=x_env, stdin=subprocess.DEVNULL, stdout=logs["xfreerdp"],
                                  stderr=logs["xfreerdp"])

        def window():
            found = subprocess.run(["xdotool", "search", "--name", "FreeRDP"], check=False, env=x_env,
                                   capture_output=True, text=True)
            return found.stdout.split()[0] if found.returncode == 0 and found.stdout.split() else None
        window_id = wait_for(window, 30, "xfreerdp window", [client, vrdp, vcpu])

        last = {}

        def screens_match():
            # SeaBIOS may still be printing: the guest frame must be the same before and after the shot.
            before = guest_frame(vm_id)
            shot = subprocess.run(["import", "-window", window_id, "png:-"], check=False, env=x_env,
                                  capture_output=True)
            after = guest_frame(vm_id)
            if shot.returncode != 0 or not (before == after).all() or not before[..., :3].any():
                return False
            image = np.asarray(Image.open(io.BytesIO(shot.stdout)).convert("RGB"))
            height, width = before.shape[:2]
            last["shot"], last["guest"] = image, before
            return image.shape[:2] == (height, width) and (image == before[..., 2::-1]).all()
        try:
            wait_for(screens_match, 40, "client window equal to the guest framebuffer", [client, vrdp, vcpu])
        except AssertionError:
            if "shot" in last:
                Image.fromarray(last["shot"]).save(tmp_path / "client.png")
                Image.fromarray(np.ascontiguousarray(last["guest"][..., 2::-1])).save(tmp_path / "guest.png")
            raise
        logs["vrdp"].flush()
        log = (tmp_path / "vrdp.log").read_text()
        assert "active at 720x400, 32 bpp" in log and "user 'tester'" in log
        stop(client)
        client = None
        wait_for(lambda: "disconnected" in (tmp_path / "vrdp.log").read_text(), 10, "disconnect logged", [vrdp])
        control = ControlClient(endpoint(vm_id, "control-vcpu"))
        try:
            control.request("poweroff")
        finally:
            control.close()
        assert vcpu.wait(30) == 0
    finally:
        for process in (client, vrdp, xvfb, vcpu):
            stop(process)
        for log_file in logs.values():
            log_file.close()
