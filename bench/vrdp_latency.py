"""Screen latency of the VRDP server: from a change written into the display surface (with its damage
message, as the vCPU process publishes it) until xfreerdp's window under Xvfb shows it, on loopback.

A stand-in display (this script owns the surface and the display channel, no VM) keeps the guest's
pace out of the figure. Prints p50/p99 against the 30 ms target; the frames-per-second figure is
bench/vrdp_fps.py. No peer server runs here: FreeRDP's shadow server is not packaged on this machine."""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import machine
from services.ipc.messages import DISPLAY_VERSION, pack
from services.ipc.naming import endpoint, shm_name
from services.ipc.shm import SharedRegion
from services.ipc.spec import LaunchSpec
from services.ipc.surface import (
    FRAME_OFFSET,
    HEADER,
    MAGIC,
    REGION_SIZE,
    VERSION,
)
from services.ipc.vrde import VrdeConfig
from tests.support.vm_processes import start

WIDTH, HEIGHT = 1024, 768
SQUARE = 64
Z_PIXMAP = 2
ALL_PLANES = 0xFFFFFFFF


class StandInDisplay:
    """The surface region and display channel a vCPU process would provide."""

    def __init__(self, vm_id: str):
        self.region = SharedRegion.create(shm_name(vm_id, "surface"), REGION_SIZE)
        HEADER.pack_into(self.region.buf, 0, MAGIC, VERSION, 0, WIDTH, HEIGHT, WIDTH * 4, 32)
        self.socket = zmq.Context.instance().socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint(vm_id, "display"))
        self.sequence = 0

    def paint(self, x: int, y: int, bgr: tuple[int, int, int]) -> None:
        pixel = bytes((*bgr, 0))
        row = pixel * SQUARE
        for line in range(y, y + SQUARE):
            start = FRAME_OFFSET + (line * WIDTH + x) * 4
            self.region.buf[start:start + len(row)] = row
        self.sequence += 1
        self.socket.send(pack([DISPLAY_VERSION, self.sequence, WIDTH, HEIGHT, 32, False, [[x, y, SQUARE, SQUARE]]]))

    def keepalive(self) -> None:
        self.socket.send(pack([DISPLAY_VERSION, self.sequence, WIDTH, HEIGHT, 32, False, []]))

    def close(self) -> None:
        self.socket.close()
        self.region.close()
        self.region.unlink()


class WindowPixels:
    """Reads single pixels of an X window through libX11 (XGetImage), fast enough to poll."""

    def __init__(self, display: str):
        self.x11 = ctypes.CDLL("libX11.so.6")
        self.x11.XOpenDisplay.restype = ctypes.c_void_p
        self.x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.x11.XGetImage.restype = ctypes.c_void_p
        self.x11.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                                       ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
        self.x11.XGetPixel.restype = ctypes.c_ulong
        self.x11.XGetPixel.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self.x11.XDestroyImage.argtypes = [ctypes.c_void_p]
        self.display = self.x11.XOpenDisplay(display.encode())
        if not self.display:
            raise RuntimeError(f"cannot open X display {display}")

    def pixel(self, window: int, x: int, y: int) -> int | None:
        image = self.x11.XGetImage(self.display, window, x, y, 1, 1, ALL_PLANES, Z_PIXMAP)
        if not image:
            return None
        try:
            return self.x11.XGetPixel(image, 0, 0) & 0xFFFFFF
        finally:
            self.x11.XDestroyImage(image)


def wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {what}")


class Session:
    """A VRDP process on a stand-in display, Xvfb, and xfreerdp showing the whole screen in a window."""

    def __init__(self, bpp: int = 32):
        self.tmp = Path(tempfile.mkdtemp(prefix="vrdp-bench-"))
        os.environ["XDG_RUNTIME_DIR"] = str(self.tmp)
        env = {**os.environ}
        vm_id = "bn" + uuid.uuid4().hex[:6]
        self.display = StandInDisplay(vm_id)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.logs = open(self.tmp / "processes.log", "w")
        self.processes = []
        vrde = VrdeConfig.listening(port, vm_id, state_dir=str(self.tmp / "state"))
        self.processes.append(start("vrdp", LaunchSpec(vm_id, vrde=vrde), self.tmp, env=env, stdout=self.logs,
                                    stderr=self.logs))
        read_fd, write_fd = os.pipe()
        self.processes.append(subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24", "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdout=self.logs, stderr=self.logs))
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            x_display = ":" + pipe.readline().strip()
        x_env = {**env, "DISPLAY": x_display, "HOME": str(self.tmp)}

        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait(listening, 30, "the VRDP listener")
        self.processes.append(subprocess.Popen(
            ["xfreerdp", f"/v:127.0.0.1:{port}", "/cert:ignore", "/sec:tls", f"/bpp:{bpp}", f"/size:{WIDTH}x{HEIGHT}",
             "/u:bench", "/p:x", "/title:vrdp-bench", "-auto-reconnect"], env=x_env, stdout=self.logs,
            stderr=self.logs))

        def window():
            found = subprocess.run(["xdotool", "search", "--name", "^vrdp-bench$"], env=x_env, capture_output=True,
                                   text=True, check=False)
            return int(found.stdout.split()[0]) if found.stdout.split() else None
        self.window = wait(window, 30, "the xfreerdp window")
        self.pixels = WindowPixels(x_display)
        self.display.keepalive()
        time.sleep(2)  # activation and the first full screen

    def pixel(self, x: int, y: int) -> int | None:
        return self.pixels.pixel(self.window, x, y)

    def close(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.display.close()
        self.logs.close()


def rgb(bgr: tuple[int, int, int]) -> int:
    return (bgr[2] << 16) | (bgr[1] << 8) | bgr[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--bpp", type=int, default=32)
    args = parser.parse_args()
    session = Session(args.bpp)
    try:
        latencies = []
        colours = [(0x20, 0x40, 0xF0), (0xF0, 0x80, 0x10), (0x10, 0xE0, 0x30), (0xC0, 0xC0, 0xC0)]
        for sample in range(args.samples):
            x = (sample * 3 % (WIDTH // SQUARE)) * SQUARE
            y = (sample * 7 % (HEIGHT // SQUARE)) * SQUARE
            colour = colours[sample % len(colours)]
            if session.pixel(x + SQUARE // 2, y + SQUARE // 2) == rgb(colour):
                colour = colours[(sample + 1) % len(colours)]
            started = time.perf_counter()
            session.display.paint(x, y, colour)
            deadline = started + 2.0
            while session.pixel(x + SQUARE // 2, y + SQUARE // 2) != rgb(colour):
                if time.perf_counter() > deadline:
                    raise SystemExit(f"bench: sample {sample} never reached the client window")
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"vrdp_latency: {args.samples} changes of a {SQUARE}x{SQUARE} square, {WIDTH}x{HEIGHT} at "
              f"{args.bpp} bpp, xfreerdp on loopback; {machine()}")
        print(f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms, min {latencies[0]:.1f} ms (target p50 < 30 ms: "
              f"{'met' if p50 < 30 else 'NOT met'})")
    finally:
        session.close()


if __name__ == "__main__":
    main()
