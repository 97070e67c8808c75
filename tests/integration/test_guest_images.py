"""Proves the test guest images under QEMU TCG (the oracle) before our own VMM runs them.

The Linux ISO must reach GUEST-READY, answer on its serial shell, format and mount an IDE disk and
power off on an ACPI power-button press; the installer ISO must show its vesamenu boot menu."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from services.demo.linux_iso import linux_iso
from tests.guests.installer_iso import installer_iso

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 60.0


class Qemu:
    """qemu-system-x86_64 -accel tcg with the serial port and QMP on unix sockets we listen on.

    The serial socket is drained by a thread at all times: QEMU blocks (holding its big lock,
    so QMP too) when nobody reads a chardev."""

    def __init__(self, tmp: Path, iso: Path, extra: list[str] = ()):
        if not shutil.which(QEMU):
            pytest.fail(f"{QEMU} is missing: run scripts/setup (qemu-system-x86)", pytrace=False)
        self.serial_out = bytearray()
        self._cond = threading.Condition()
        listeners = {}
        for name in ("serial", "qmp"):
            path = tmp / f"{name}.sock"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            sock.listen(1)
            sock.settimeout(20)
            listeners[name] = (sock, path)
        cmd = [QEMU, "-accel", "tcg", "-m", "512", "-nodefaults", "-vga", "std", "-display", "none",
               "-cdrom", str(iso), "-boot", "order=d",
               "-chardev", f"socket,id=ser0,path={listeners['serial'][1]}", "-serial", "chardev:ser0",
               "-chardev", f"socket,id=qmp0,path={listeners['qmp'][1]}", "-mon", "chardev=qmp0,mode=control",
               *extra]
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        try:
            self.serial, _ = listeners["serial"][0].accept()
            self.qmp_sock, _ = listeners["qmp"][0].accept()
        finally:
            for sock, _ in listeners.values():
                sock.close()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.qmp_file = self.qmp_sock.makefile("rwb")
        greeting = json.loads(self.qmp_file.readline())
        assert "QMP" in greeting
        self.qmp("qmp_capabilities")

    def _drain(self) -> None:
        while True:
            try:
                data = self.serial.recv(65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self.serial_closed = True
                    self._cond.notify_all()
                    return
                self.serial_out += data
                self._cond.notify_all()

    serial_closed = False

    def wait_serial(self, marker: bytes, timeout: float, after: int = 0) -> float:
        """Seconds since QEMU started when `marker` appeared on serial (searching from `after`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while marker not in self.serial_out[after:]:
                left = deadline - time.monotonic()
                if left <= 0 or self.serial_closed:
                    tail = bytes(self.serial_out[-2000:]).decode(errors="replace")
                    pytest.fail(f"no {marker!r} on the serial console within {timeout} s; "
                                f"serial tail:\n{tail}", pytrace=False)
                self._cond.wait(min(left, 0.5))
        return time.monotonic() - self.start

    def type(self, line: str) -> int:
        """Types a line on the serial console; returns the serial offset before it."""
        with self._cond:
            mark = len(self.serial_out)
        self.serial.sendall(line.encode() + b"\r")
        return mark

    def run(self, command: str, marker: str, timeout: float = 20.0) -> str:
        """Runs a shell command on the serial console and waits for `marker` in its output."""
        mark = self.type(command)
        self.wait_serial(marker.encode(), timeout, after=mark)
        with self._cond:
            end = self.serial_out.index(marker.encode(), mark)
        self.wait_serial(b"guest# ", timeout, after=end)  # the shell is ready for the next line
        return bytes(self.serial_out[mark:]).decode(errors="replace")

    def qmp(self, command: str, **arguments) -> dict:
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.qmp_file.write(json.dumps(msg).encode() + b"\n")
        self.qmp_file.flush()
        while True:
            reply = json.loads(self.qmp_file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise AssertionError(f"QMP {command}: {reply['error']}")
            return reply["return"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for sock in (self.serial, self.qmp_sock):
            sock.close()


@pytest.fixture
def qemu(tmp_path):
    machines = []

    def start(iso: Path, extra: list[str] = ()) -> Qemu:
        machines.append(Qemu(tmp_path, iso, list(extra)))
        return machines[-1]

    yield start
    for machine in machines:
        machine.close()


@pytest.fixture(scope="module")
def linux_image() -> Path:
    return linux_iso()


def boot_to_shell(vm: Qemu) -> float:
    ready = vm.wait_serial(b"GUEST-READY", BOOT_TIMEOUT)
    vm.wait_serial(b"guest# ", 20)
    return ready


def test_linux_iso_is_cached():
    first = linux_iso()
    start = time.monotonic()
    again = linux_iso()
    assert again == first and first.is_file()
    assert time.monotonic() - start < 2.0
    assert first.stat().st_size < 40 * 1024 * 1024


def test_a_missing_tool_names_its_debian_package(monkeypatch):
    from services.demo import linux_iso as builder

    real = builder.package_version
    monkeypatch.setattr(builder, "package_version",
                        lambda p: None if p == "grub-pc-bin" else real(p))
    with pytest.raises(builder.GuestBuildError, match="grub-pc-bin"):
        builder.linux_iso()


def test_linux_iso_boots_to_a_serial_shell(qemu, linux_image):
    vm = qemu(linux_image)
    grub = vm.wait_serial(b"GRUB-LINUX", 20)
    vm.wait_serial(b"GRUB-BOOT", 30)
    ready = boot_to_shell(vm)
    print(f"GRUB-LINUX at {grub:.2f} s, GUEST-READY at {ready:.2f} s")
    out = vm.run("echo hello-$((6*7))", "hello-42")
    assert "hello-42" in out
    info = vm.run("guest-info; echo INFO-$((1+1))", "INFO-2")
    assert "block: sr0" in info  # the boot CD through ata_piix + sr_mod
    assert "input: event" in info and "Power Button" in info
    assert "serial: ttyS0 port=0x3F8 irq=4" in info


def test_linux_iso_formats_and_mounts_an_ide_disk(qemu, linux_image, tmp_path):
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    vm = qemu(linux_image, ["-drive", f"file={disk},format=raw,if=ide,index=0"])
    boot_to_shell(vm)
    info = vm.run("guest-info; echo INFO-$((1+1))", "INFO-2")
    assert f"block: sda sectors={64 * 2048} " in info
    out = vm.run("mkfs.ext2 -q /dev/sda && mount /dev/sda /mnt && echo written > /mnt/hello.txt"
                 " && umount /mnt && mount -o ro /dev/sda /mnt && cat /mnt/hello.txt"
                 " && umount /mnt && echo DISK-$((40+2))", "DISK-42", timeout=40)
    assert "written" in out
    vm.type("sync; poweroff -f")
    vm.proc.wait(30)
    # The host sees an ext2 superblock (magic 0xEF53 at byte 1080).
    assert disk.read_bytes()[1080:1082] == b"\x53\xef"


def test_linux_iso_powers_off_on_acpi_power_button(qemu, linux_image):
    vm = qemu(linux_image)
    boot_to_shell(vm)
    mark = len(vm.serial_out)
    vm.qmp("system_powerdown")
    vm.wait_serial(b"GUEST-POWEROFF", 20, after=mark)
    assert vm.proc.wait(30) == 0


def _screendump(vm: Qemu, path: Path):
    from PIL import Image

    path.unlink(missing_ok=True)
    vm.qmp("screendump", filename=str(path))
    with Image.open(path) as img:
        img.load()
        return img.copy()


def test_installer_iso_shows_its_boot_menu(qemu, tmp_path):
    iso = installer_iso()
    vm = qemu(iso)
    shot = tmp_path / "screen.ppm"
    deadline = time.monotonic() + 30
    previous = None
    while True:
        img = _screendump(vm, shot)
        # vesamenu switches to 640x480 graphics and draws the splash picture behind the menu.
        if img.size == (640, 480) and len(img.getcolors(1 << 16) or range(1 << 16)) > 16:
            if previous is not None and img.tobytes() == previous:
                break
            previous = img.tobytes()
        else:
            previous = None
        if time.monotonic() > deadline:
            pytest.fail(f"no stable installer menu within 30 s (last frame {img.size})", pytrace=False)
        time.sleep(0.2)
    print(f"installer menu stable at {time.monotonic() - vm.start:.2f} s")
    img.save(tmp_path / "menu.png")
    # The menu waits for the user (timeout 0): nothing boots by itself.
    time.sleep(1.0)
    assert _screendump(vm, shot).tobytes() == img.tobytes()
