"""The Debian installer's screens as tests see them: screenshots of a VM kept as they change, the
vesamenu boot menu, the kernel's mode set and the installer's first dialog recognised by colour,
and US-layout typing through the input channel."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.naming import endpoint

POLL = 0.25


class Screen:
    """Screenshots of one VM; each distinct frame is saved as NNN-WxH.png in `folder`."""

    def __init__(self, vm_id: str, folder: Path, start: float):
        self.client = ControlClient(endpoint(vm_id, "control-vcpu"))
        self.folder = folder
        self.start = start
        self.count = 0
        self.last: Image.Image | None = None
        self.last_path: Path | None = None
        self.history: list[tuple[float, tuple[int, int], Path]] = []   # (time, size, file) of changes

    def grab(self) -> tuple[Image.Image, bool]:
        """The current screen and whether it is the same as the previous grab."""
        tmp = self.folder / "current.png"
        self.client.call(ops.Screenshot(path=str(tmp)))
        with Image.open(tmp) as img:
            img = img.convert("RGB")
        same = self.last is not None and img.size == self.last.size and img.tobytes() == self.last.tobytes()
        if not same:
            self.count += 1
            path = self.folder / f"{self.count:03d}-{img.size[0]}x{img.size[1]}.png"
            os.replace(tmp, path)
            self.last_path = path
            self.history.append((time.monotonic() - self.start, img.size, path))
        self.last = img
        return img, same

    def wait(self, predicate, timeout: float, what: str, stable: bool = True) -> tuple[Image.Image, float]:
        """Polls until `predicate(frame)` holds (on two equal polls in a row when `stable`)."""
        deadline = time.monotonic() + timeout
        while True:
            img, same = self.grab()
            if predicate(img) and (same or not stable):
                return img, time.monotonic() - self.start
            if time.monotonic() > deadline:
                changes = "\n".join(f"  {t:6.1f} s {s[0]}x{s[1]} {p}" for t, s, p in self.history[-12:])
                pytest.fail(f"no {what} within {timeout:.0f} s; last frame {img.size} in {self.last_path};"
                            f" screen changes:\n{changes}", pytrace=False)
            time.sleep(POLL)

    def close(self) -> None:
        self.client.close()


def is_menu(img: Image.Image) -> bool:
    """vesamenu's screen: 640x480 graphics, the splash picture (thousands of colours) and the
    menu's white text in the middle (the splash alone has none there)."""
    if img.size != (640, 480):
        return False
    colours = img.getcolors(1 << 16)
    if colours is not None and len(colours) < 1000:
        return False
    box = np.asarray(img)[140:260, 120:520]
    return int((box.min(axis=-1) >= 200).sum()) > 500


def is_kernel_mode(img: Image.Image) -> bool:
    """The installer's command line says vga=788: VESA mode 0x114, 800x600 (vesamenu never uses
    it), set by the kernel's own real-mode setup code."""
    return img.size == (800, 600)


def is_installer_dialog(img: Image.Image) -> bool:
    """debian-installer's newt screen: its blue background and a grey dialog box make up most of
    the screen, with text in other colours on them."""
    a = np.asarray(img)
    if a.shape[0] < 400:
        return False
    colours, counts = np.unique(a.reshape(-1, 3), axis=0, return_counts=True)
    share = dict(zip(map(tuple, colours.tolist()), counts / counts.sum()))
    blue, grey = share.get((0, 0, 170), 0.0), share.get((170, 170, 170), 0.0)
    return blue > 0.02 and grey > 0.1 and blue + grey > 0.8 and len(colours) >= 4



# Set-1 make codes of a US keyboard: (code, shift)
_ROWS = {0x02: "1234567890-=", 0x10: "qwertyuiop[]", 0x1E: "asdfghjkl;'", 0x2C: "zxcvbnm,./"}
_SHIFTED = {0x02: "!@#$%^&*()_+", 0x10: "QWERTYUIOP{}", 0x1E: 'ASDFGHJKL:"', 0x2C: "ZXCVBNM<>?"}
KEYS = {" ": (0x39, False), "\t": (0x0F, False), "\n": (0x1C, False)}
for _start, _chars in _ROWS.items():
    KEYS.update({c: (_start + i, False) for i, c in enumerate(_chars)})
for _start, _chars in _SHIFTED.items():
    KEYS.update({c: (_start + i, True) for i, c in enumerate(_chars)})
LEFT_SHIFT = 0x2A


def type_text(keys, text: str, pause: float = 0.02) -> None:
    """`keys` is an InputSender; each character is pressed and released, with Shift if needed."""
    for char in text:
        code, shift = KEYS[char]
        if shift:
            keys.key(LEFT_SHIFT, False, True)
        keys.key(code, False, True)
        time.sleep(pause)
        keys.key(code, False, False)
        if shift:
            keys.key(LEFT_SHIFT, False, False)
        time.sleep(pause)
