"""Acceptance (issue 3): the Debian installer ISO boots on our VMM under tcg to its vesamenu boot
menu, and Enter on "Install" starts the installer's kernel, which reaches the installer's first
dialog.

The VM runs through the real command line (`python -m services.headless`); the screen is read
with the vCPU process's "screenshot" control request and the key goes in on the input channel.
Every frame that changes is kept in the test's tmp folder, which failure messages name."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.io import InputSender
from services.ipc.naming import endpoint, shm_name
from tests.guests.installer_iso import installer_iso
from tests.support.installer_screen import (
    Screen,
    is_installer_dialog,
    is_kernel_mode,
    is_menu,
)

# At 512 MiB the installer's first dialog is "Low memory mode" (so it is under QEMU), ~70 s after
# the kernel starts; at 1 GiB it is "Select a language", but only after ~130 s.
MEMORY_MIB = 512
MENU_TIMEOUT = 60.0        # from start; ~4 s on a 2-core host
KERNEL_TIMEOUT = 120.0     # from Enter; isolinux reads linux + initrd.gz (48 MB): ~8 s
INSTALLER_TIMEOUT = 150.0  # from the kernel's mode set; 60-80 s
ENTER = 0x1C               # set-1 make code


@pytest.fixture
def vm(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    vm_id = "iso" + uuid.uuid4().hex[:8]
    iso = installer_iso()
    out, err = open(tmp_path / "headless.out", "wb"), open(tmp_path / "headless.err", "wb")
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.headless", "--name", vm_id, "--iso", str(iso),
         "--memory", str(MEMORY_MIB), "--accel", "tcg", "--serial-log", str(tmp_path / "serial.log")],
        stdout=out, stderr=err, env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run")})
    deadline = time.monotonic() + 30
    while not os.path.exists(f"/dev/shm/{shm_name(vm_id, 'surface')}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the VM did not start: {(tmp_path / 'headless.err').read_text()}", pytrace=False)
        time.sleep(0.05)
    shots = tmp_path / "screens"
    shots.mkdir()
    screen = Screen(vm_id, shots, start)
    yield vm_id, proc, screen
    screen.close()
    if proc.poll() is None:
        client = ControlClient(endpoint(vm_id, "control-vcpu"), timeout_ms=5000)
        try:
            client.call(ops.PowerOff())
            proc.wait(30)
        except Exception:
            proc.kill()
            proc.wait(10)
        finally:
            client.close()
    out.close()
    err.close()
    for region in ("ram", "vram", "surface"):
        Path(f"/dev/shm/{shm_name(vm_id, region)}").unlink(missing_ok=True)


def test_installer_iso_boots_to_its_menu_and_enter_starts_the_installer(vm, tmp_path):
    vm_id, proc, screen = vm

    # 1. The boot menu.
    menu, menu_at = screen.wait(is_menu, MENU_TIMEOUT, "stable installer boot menu")
    menu_file = screen.last_path
    print(f"installer menu stable at {menu_at:.1f} s: {menu_file}")
    colours = menu.getcolors(1 << 16)
    assert menu.size == (640, 480) and (colours is None or len(colours) > 1000), menu_file
    # Before it: SeaBIOS's and ISOLINUX's 720x400 text screen, then vesamenu's splash without the
    # menu (while it draws, "Press ENTER to boot or TAB to edit a menu entry" shows for a moment;
    # the stable menu is pixel for pixel QEMU's).
    text_screens = [p for _, s, p in screen.history if s == (720, 400)]
    assert text_screens, f"no 720x400 text screen before the menu: {screen.history}"
    with Image.open(text_screens[-1]) as text:
        assert text.size != menu.size and not is_menu(text.convert("RGB"))
    # The menu waits for the user ("timeout 0"): it stays as it is.
    time.sleep(1.0)
    again, same = screen.grab()
    assert again.tobytes() == menu.tobytes(), f"the menu changed by itself: {screen.last_path}"

    # 2. Enter on "Install": isolinux loads linux and initrd.gz, the kernel's setup code sets the
    # VESA mode its command line asks for, the kernel starts and the installer shows its dialog.
    keys = InputSender(endpoint(vm_id, "input"))
    try:
        keys.key(ENTER, False, True)
        time.sleep(0.1)
        keys.key(ENTER, False, False)
    finally:
        keys.close()
    pressed = time.monotonic() - screen.start
    _, kernel_at = screen.wait(is_kernel_mode, KERNEL_TIMEOUT, "800x600 mode of the kernel (vga=788)",
                               stable=False)
    print(f"kernel mode set {kernel_at - pressed:.1f} s after Enter")
    dialog, dialog_at = screen.wait(is_installer_dialog, INSTALLER_TIMEOUT, "installer dialog")
    print(f"installer dialog at {dialog_at:.1f} s ({dialog_at - kernel_at:.1f} s after the kernel's "
          f"mode set): {screen.last_path}")
    assert dialog.size != menu.size
    assert proc.poll() is None, "the VM ended"
    assert b"Traceback" not in (tmp_path / "headless.err").read_bytes()
