"""The manual's headless-server walkthrough (spec_headless_server.sh) with the Linux test guest: the guest
boots under VBoxHeadless, showvminfo shows the bound VRDE port, an RDP client connects, VBoxManage
controlvm powers it off. One guest boot for the whole module."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from services.demo.linux_iso import linux_iso
from tests.guests.keys import scancodes
from tests.support.vboxmanage import Cli
from tests.waiting import free_port, wait_for

SCRIPT = Path(__file__).with_name("spec_headless_server.sh")
BOOT_TIMEOUT_S = 600          # tcg on a shared 2-CPU machine
VM = "Windows XP"


def x224_confirm(port: int) -> bytes:
    """An RDP client's first PDU (X.224 Connection Request asking for TLS); the server's reply."""
    negotiation = struct.pack("<BBHI", 1, 0, 8, 1)                  # RDP_NEG_REQ, PROTOCOL_SSL
    x224 = bytes([6 + len(negotiation), 0xE0, 0, 0, 0, 0, 0]) + negotiation
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(struct.pack(">BBH", 3, 0, 4 + len(x224)) + x224)
        reply = connection.recv(4096)
    return reply


class Walkthrough:
    def __init__(self):
        self.cli = Cli()
        self.port = free_port()
        self.serial_log = self.cli.work / "com1.log"
        self.iso = str(linux_iso())
        self.pid = 0

    def serial(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def run_script(self) -> subprocess.CompletedProcess:
        env = {**self.cli.env, "HEADBOX_GUEST_ISO": self.iso, "HEADBOX_SERIAL_LOG": str(self.serial_log),
               "HEADBOX_VRDE_PORT": str(self.port)}
        return subprocess.run(["bash", str(SCRIPT)], cwd=self.cli.work, env=env, capture_output=True, text=True,
                              timeout=300)

    def close(self) -> None:
        pid_file = self.cli.work / "VBoxHeadless.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.2)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.cli.close()


@pytest.fixture(scope="module")
def walk():
    walkthrough = Walkthrough()
    try:
        done = walkthrough.run_script()
        assert done.returncode == 0, f"the walkthrough script failed:\n{done.stdout}\n{done.stderr}"
        walkthrough.pid = int((walkthrough.cli.work / "VBoxHeadless.pid").read_text())
        yield walkthrough
    finally:
        walkthrough.close()


def headless_alive(walk) -> bool:
    try:
        os.kill(walk.pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_script_output_is_virtualboxs(walk):
    work = walk.cli.work
    assert (work / "WinXP.vdi").is_file()
    assert "ID:          WindowsXP\n" in (work / "ostypes.txt").read_text()
    info = walk.cli.showvminfo(VM)
    assert info["IDE Controller-0-0"] == str(work / "WinXP.vdi")
    assert info["IDE Controller-0-1"] == walk.iso
    assert (info["memory"], info["acpi"], info["boot1"], info["nic1"]) == ("256", "on", "dvd", "nat")
    assert walk.iso in walk.cli("list", "dvds") and str(work / "WinXP.vdi") in walk.cli("list", "hdds")


def test_guest_boots_and_rdp_answers_on_the_shown_port(walk):
    log = walk.cli.work / "VBoxHeadless.log"

    def ready():
        assert headless_alive(walk), "VBoxHeadless exited:\n" + log.read_text()
        return "GUEST-READY" in walk.serial()
    wait_for(ready, BOOT_TIMEOUT_S, "the guest's GUEST-READY on COM1")
    output = log.read_text()
    assert output.startswith("Headbox Headless Interface 0.1.0\n")
    assert f"VRDE server is listening on port {walk.port}.\n" in output
    human = walk.cli("showvminfo", VM)
    assert f"VRDE port:                   {walk.port}\n" in human
    assert "State:                       running (since " in human
    info = walk.cli.showvminfo(VM)
    assert info["vrdeport"] == str(walk.port) and info["VMState"] == "running"
    assert f'"{VM}"' in walk.cli("list", "runningvms")
    reply = x224_confirm(walk.port)
    assert reply[:2] == b"\x03\x00" and reply[5] == 0xD0, reply.hex()     # TPKT, X.224 Connection Confirm


def test_controlvm_screenshot_and_typed_keys_reach_the_guest(walk):
    shot = walk.cli.work / "screen.png"
    walk.cli("controlvm", VM, "screenshotpng", "screen.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # tty1's shell (on the VGA console, fed by the PS/2 keyboard) echoes a marker to COM1.
    typed = scancodes("echo KEYS-$((6*7)) >/dev/ttyS0\n")
    codes = [f"{code | (0 if pressed else 0x80):02x}" for code, _, pressed in typed]
    for start in range(0, len(codes), 16):
        walk.cli("controlvm", VM, "keyboardputscancode", *codes[start:start + 16])
    wait_for(lambda: "KEYS-42" in walk.serial(), 60, "the typed command's output on COM1")


def test_running_vm_refuses_what_virtualbox_refuses(walk):
    before = walk.cli.settings_files()
    message = walk.cli.fails("modifyvm", VM, "--memory", "512")
    assert "mutable" in message or "running" in message
    assert walk.cli.settings_files() == before
    second = subprocess.run([walk.cli.vboxheadless, "--startvm", VM], cwd=walk.cli.work, env=walk.cli.env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and second.stderr.startswith("VBoxHeadless: error: "), second.stderr
    assert len(second.stderr.splitlines()) == 1
    assert walk.cli.settings_files() == before
    assert headless_alive(walk)


def test_controlvm_poweroff_ends_vboxheadless(walk):
    walk.cli("controlvm", VM, "poweroff")
    wait_for(lambda: not headless_alive(walk), 60, "VBoxHeadless to exit after poweroff")
    assert walk.cli.showvminfo(VM)["VMState"] == "poweroff"
    assert walk.cli("list", "runningvms") == ""


def test_startvm_type_vrdp_runs_it_under_the_manager(walk):
    assert not headless_alive(walk)
    port = free_port()
    walk.cli("modifyvm", VM, "--vrde", "on", "--vrdeport", str(port))
    out = walk.cli("startvm", VM, "--type", "vrdp")
    assert out == f'Waiting for VM "{VM}" to power on...\nVM "{VM}" has been successfully started.\n'
    info = walk.cli.showvminfo(VM)
    assert info["VMState"] == "running" and info["vrdeport"] == str(port)
    assert f'"{VM}"' in walk.cli("list", "runningvms")
    reply = x224_confirm(port)
    assert reply[:2] == b"\x03\x00" and reply[5] == 0xD0, reply.hex()
    walk.cli("controlvm", VM, "poweroff")
    assert walk.cli.showvminfo(VM)["VMState"] == "poweroff"
    assert walk.cli("list", "runningvms") == ""


def test_startvm_with_every_vrde_port_taken_fails_and_stays_off(walk):
    assert not headless_alive(walk)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        walk.cli("modifyvm", VM, "--vrde", "on", "--vrdeport", str(port))     # startvm follows the setting
        before = walk.cli.settings_files()
        done = walk.cli.run("startvm", VM, "--type", "headless")
        lines = done.stderr.splitlines()
        assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("VBoxManage: error: "), done.stderr
        assert str(port) in lines[0]
        assert walk.cli.showvminfo(VM)["VMState"] == "poweroff"
        assert walk.cli.settings_files() == before


def processes_of(uuid: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and uuid.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_vboxheadless_vrde_config_and_sigterm_powers_off(walk):
    port = free_port()
    walk.cli("modifyvm", VM, "--vrde", "on", "--vrdeport", str(port))
    uuid = walk.cli.showvminfo(VM)["UUID"]
    log = walk.cli.work / "second-run.log"
    with log.open("w") as output:
        process = subprocess.Popen([walk.cli.vboxheadless, "--startvm", uuid, "--vrde", "config"], cwd=walk.cli.work,
                                   env=walk.cli.env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: f"VRDE server is listening on port {port}.\n" in log.read_text()
                 or process.poll() is not None, 120, "the second VBoxHeadless run's RDP server")
        assert process.poll() is None, log.read_text()
        assert walk.cli.showvminfo(VM)["VMState"] == "running"
        assert processes_of(uuid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert walk.cli.showvminfo(VM)["VMState"] == "poweroff"
    assert walk.cli("list", "runningvms") == ""
    assert processes_of(uuid) == []
