"""Shared helpers of the RDP client acceptance tests: the Linux test guest booted once with its RDP
server, and real clients (xfreerdp, rdesktop) driven under Xvfb with xdotool and ImageMagick."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from services.demo.linux_iso import linux_iso
from services.headless import VmProcesses
from services.ipc import ops
from services.ipc.control import ControlClient, call
from services.ipc.naming import endpoint, shm_name
from services.ipc.shm import SharedRegion
from services.ipc.spec import Drive, LaunchSpec
from services.ipc.surface import frame_view
from services.ipc.vrde import VrdeConfig
from services.vrdp.codecs import convert
from tests.support import vm_processes
from tests.support.x_display import Display, stop  # noqa: F401 (stop is for the tests)
from tests.waiting import free_port, wait_for  # noqa: F401 (the tests import them from here)

BOOT_TIMEOUT = 300
TOOLS = {"Xvfb": "xvfb", "xdotool": "xdotool", "import": "imagemagick", "xfreerdp": "freerdp2-x11",
         "rdesktop": "rdesktop"}


def require(*tools: str) -> None:
    """Acceptance tests fail loudly, never skip, when a client or tool is missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    assert not missing, "missing " + ", ".join(f"{t} (apt-get install {TOOLS.get(t, t)})" for t in missing)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def guest_frame(vm_id: str) -> np.ndarray:
    """A copy of the VM's framebuffer (BGRX) from its shared surface."""
    region = SharedRegion.open(shm_name(vm_id, "surface"))
    try:
        return frame_view(region).copy()
    finally:
        region.close()


# --- the guest ---------------------------------------------------------------------------------

@dataclass
class Guest:
    """The Linux test ISO running on tcg; its RDP server is started once the guest is up."""
    vm_id: str
    tmp: Path
    processes: VmProcesses
    port: int
    vrdp: subprocess.Popen | None = None
    logs: dict = field(default_factory=dict)

    @property
    def serial_log(self) -> Path:
        return self.tmp / "serial.log"

    def serial(self) -> str:
        return self.serial_log.read_bytes().decode("latin-1") if self.serial_log.exists() else ""

    def wait_serial(self, marker: str, timeout: float, after: int = 0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pos = self.serial().find(marker, after)
            if pos >= 0:
                return pos
            time.sleep(0.1)
        raise AssertionError(f"{marker!r} not on serial within {timeout} s; it ends with:\n"
                             + self.serial()[-1500:])

    def type_serial(self, text: str) -> int:
        """Types `text` on the guest's serial console; returns the serial offset before it."""
        mark = len(self.serial())
        control = ControlClient(endpoint(self.vm_id, "control-devices"))
        try:
            control.call(ops.SerialInput(data=text.encode()))
        finally:
            control.close()
        return mark

    def vrdp_log(self) -> str:
        self.logs["vrdp"].flush()
        return (self.tmp / "vrdp.log").read_text(errors="replace")

    def frame(self) -> np.ndarray:
        return guest_frame(self.vm_id)

    def screen_text(self) -> list[str]:
        control = ControlClient(endpoint(self.vm_id, "control-vcpu"))
        try:
            return control.call(ops.ScreenText())["rows"] or []
        finally:
            control.close()

    def machine_state(self) -> dict:
        """The vCPU process's machine snapshot (pause, snapshot, resume: about 3 ms)."""
        control = ControlClient(endpoint(self.vm_id, "control-vcpu"))
        try:
            control.call(ops.Pause())
            try:
                return control.call(ops.Snapshot())["state"]
            finally:
                control.call(ops.Resume())
        finally:
            control.close()

    def mouse_state(self) -> dict:
        """The PS/2 mouse of the VM's i8042 (hosted by the vCPU process)."""
        mouse = _find_mouse(self.machine_state())
        assert mouse is not None, "no PS/2 mouse in the machine state"
        return mouse

    def keyboard_leds(self) -> int:
        """The lock LEDs the guest last set on its PS/2 keyboard (bit 0 scroll, 1 num, 2 caps)."""
        return int(self.machine_state()["platform"]["i8042"]["keyboard"]["leds"])

    def vrde(self, properties: dict[str, str]) -> VrdeConfig:
        return VrdeConfig.listening(self.port, self.vm_id, vm_uuid=self.vm_id, properties=dict(properties),
                                    state_dir=str(self.tmp / "vrdp-state"))

    def start_vrdp(self, properties: dict[str, str]) -> None:
        """The RDP server started on its own, as the manager's supervisor starts it, once the guest runs."""
        spec = dataclasses.replace(self.processes.spec, vrde=self.vrde(properties))
        self.logs["vrdp"] = (self.tmp / "vrdp.log").open("w+")
        self.vrdp = vm_processes.start("vrdp", spec, self.tmp, stdout=self.logs["vrdp"], stderr=self.logs["vrdp"])
        wait_for(lambda: listening(self.port), 60, "VRDP listener", [self.vrdp])

    def reconfigure(self, properties: dict[str, str]) -> None:
        """New settings through the server's control socket, as the manager sends them: applied (and the
        listener rebound when Security/* changed) before the reply."""
        call(endpoint(self.vm_id, "control-vrdp"), ops.Configure(config=self.vrde(properties).to_dict()),
             timeout_ms=20000)
        wait_for(lambda: listening(self.port), 20, "VRDP listener after the change", [self.vrdp])


def _find_mouse(state):
    if isinstance(state, dict):
        if "buttons" in state and "last_packet" in state:
            return state
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        for value in state:
            found = _find_mouse(value)
            if found is not None:
                return found
    return None


def boot_guest(tmp: Path, properties: dict[str, str]):
    """A generator for a module fixture: yields a Guest whose shell is ready and RDP server listens."""
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(tmp)  # endpoint() and shm_name() here and in the children
    vm_id = "rdp" + uuid.uuid4().hex[:6]
    spec = LaunchSpec(vm_id=vm_id, memory_mib=256, accel="tcg", drives=[Drive(1, 0, "dvd", str(linux_iso()))],
                      serial_log=str(tmp / "serial.log"))
    processes = VmProcesses(spec)
    guest = Guest(vm_id, tmp, processes, free_port())
    started = time.monotonic()
    try:
        processes.start()
        guest.wait_serial("GUEST-READY", BOOT_TIMEOUT)
        guest.wait_serial("guest# ", 60)
        print(f"\nLinux test ISO ready after {time.monotonic() - started:.1f} s on tcg")
        guest.start_vrdp(properties)
        yield guest
    finally:
        stop(guest.vrdp)
        processes.kill()
        for log in guest.logs.values():
            log.close()
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old


# --- the X server and the clients --------------------------------------------------------------

class Client:
    """One RDP client process on the display; its log is kept for the assertion messages."""

    def __init__(self, display: Display, argv: list[str], log_path: Path, title: str, answer: str = "yes\n"):
        self.display = display
        self.title = title
        self.log_path = log_path
        self.log = log_path.open("w+")
        # rdesktop reads its certificate question from stdin (EOF there makes it crash).
        self.process = subprocess.Popen(argv, env=display.env, stdin=subprocess.PIPE, stdout=self.log,
                                        stderr=self.log)
        self.process.stdin.write(answer.encode())
        self.process.stdin.flush()
        self.window: str | None = None

    def text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_window(self, others=()) -> str:
        def found():
            out = self.display.xdotool("search", "--name", self.title, check=False).split()
            return out[0] if out else None
        try:
            self.window = wait_for(found, 40, f"{self.title} window", [self.process, *others])
        except AssertionError as exc:
            raise AssertionError(f"{exc}; client log:\n{self.text()[-2000:]}") from None
        return self.window

    def screenshot(self) -> np.ndarray | None:
        shot = subprocess.run(["import", "-window", self.window, "png:-"], env=self.display.env,
                              capture_output=True, check=False)
        if shot.returncode != 0:
            return None
        return np.asarray(Image.open(io.BytesIO(shot.stdout)).convert("RGB"))

    def focus(self) -> None:
        self.display.xdotool("mousemove", "--window", self.window, "5", "5")
        self.display.xdotool("windowfocus", "--sync", self.window)

    def type_line(self, text: str) -> None:
        self.focus()
        self.display.xdotool("type", "--delay", "60", text)
        self.display.xdotool("key", "--delay", "60", "Return")

    def close(self) -> None:
        stop(self.process)
        self.log.close()


def expected_image(frame: np.ndarray, bpp: int) -> np.ndarray:
    """What a client must show for the guest frame at `bpp`: every pixel, after the depth's quantisation
    (565/555 rounding, the 6x6x6 palette at 8 bpp); R,G,B."""
    if bpp in (24, 32):
        return frame[..., 2::-1]
    return convert.quantise(frame, bpp)[..., 2::-1]


# How far a client may show a channel from the guest's colour at 15/16 bpp: below one step of the
# channel's 5 or 6 bits (clients widen them back to 8 bits differently; FreeRDP turns 0xAA's 6-bit
# green into 0xAD, Windows and our decoder into 0xAA).
ROUNDING = {15: np.array([8, 8, 8]), 16: np.array([8, 4, 8])}  # R, G, B


def screen_equal(image: np.ndarray, frame: np.ndarray, bpp: int) -> bool:
    """Every pixel: exact at 8 (the palette's colours), 24 and 32 bpp; within rounding at 15/16."""
    if bpp in ROUNDING:
        rgb = frame[..., 2::-1]
        if image.shape != rgb.shape:
            return False
        return bool((np.abs(image.astype(np.int16) - rgb.astype(np.int16)) < ROUNDING[bpp]).all())
    want = expected_image(frame, bpp)
    return image.shape == want.shape and bool((image == want).all())


def assert_screen_matches(client: Client, guest: Guest, bpp: int, tmp: Path, timeout: float = 60,
                          larger_window: bool = False) -> None:
    """The client window equals the guest framebuffer; the guest frame must be the same before and
    after the shot (the console cursor blinks). larger_window: a client that keeps its own window
    size (rdesktop without -g) shows the desktop at the top left and black around it."""
    last = {}

    def matches():
        before = guest.frame()
        image = client.screenshot()
        after = guest.frame()
        if image is None or not (before == after).all() or not before[..., :3].any():
            return False
        if larger_window:
            height, width = before.shape[:2]
            if image.shape[0] < height or image.shape[1] < width:
                return False
            outside = image.copy()
            outside[:height, :width] = 0
            if outside.any():
                return False
            image = image[:height, :width]
        last["shot"], last["guest"] = image, before
        return screen_equal(image, before, bpp)
    try:
        wait_for(matches, timeout, f"client window equal to the guest framebuffer at {bpp} bpp",
                 [client.process])
    except AssertionError:
        if "shot" not in last:
            raise
        shot, frame = last["shot"], last["guest"]
        want = expected_image(frame, bpp)
        Image.fromarray(shot).save(tmp / "client.png")
        Image.fromarray(np.ascontiguousarray(want)).save(tmp / "guest.png")
        if shot.shape != want.shape:
            raise AssertionError(f"client window {shot.shape} vs guest {want.shape}") from None
        rows = sum(not screen_equal(shot[y:y + 1], frame[y:y + 1], bpp) for y in range(want.shape[0]))
        raise AssertionError(f"{rows} rows differ (client.png, guest.png in {tmp}); "
                             f"client log:\n{client.text()[-1500:]}") from None


def assert_typing_reaches_the_shell(client: Client, guest: Guest, seed: int) -> None:
    """Typed into the client window, evaluated by the guest's tty1 shell, printed on its serial line:
    the arithmetic proves the shell ran the line rather than something echoing the keys."""
    mark = len(guest.serial())
    client.type_line(f"echo typed-$(({seed}*2)) > /dev/ttyS0")
    try:
        guest.wait_serial(f"typed-{seed * 2}", 60, after=mark)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nscreen:\n" + "\n".join(guest.screen_text())) from None


def assert_click_reaches_the_mouse(client: Client, guest: Guest) -> None:
    """A button held in the client window is held on the VM's PS/2 mouse (the i8042 state in the vCPU
    process's machine snapshot), and released with it; when the guest has enabled the mouse, the
    packet it was sent carries the button too. The guest kernel is not asked: on a loaded machine
    it sometimes misses the i8042 AUX port at boot and has no mouse at all."""
    client.focus()
    display = client.display
    display.xdotool("mousemove", "--window", client.window, "100", "100")
    display.xdotool("mousedown", "1")

    def held():
        state = guest.mouse_state()
        if not state["buttons"] & 1:
            return False
        packet = bytes(state["last_packet"])
        return not state["reporting"] or (packet[:1] != b"" and packet[0] & 0x07 == 1)
    try:
        wait_for(held, 20, "left button held on the VM's PS/2 mouse", [client.process])
    finally:
        display.xdotool("mouseup", "1")
    wait_for(lambda: guest.mouse_state()["buttons"] & 1 == 0, 20, "left button released on the VM's mouse",
             [client.process])
