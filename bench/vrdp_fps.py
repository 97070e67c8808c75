"""Frames per second the VRDP server delivers to xfreerdp on loopback when the whole screen (or a quarter
of it) changes every frame: each frame is counted once its last tile shows in the client window.

Uses vrdp_latency.py's stand-in display (no VM), so only the server, the codec and the client are timed."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import machine
from bench.vrdp_latency import HEIGHT, WIDTH, Session, rgb
from services.ipc.messages import DISPLAY_VERSION, pack
from services.ipc.surface import FRAME_OFFSET


def frames(session: Session, width: int, height: int, seconds: float, noisy: bool) -> tuple[int, float]:
    pixels = np.frombuffer(session.display.region.buf, np.uint8, WIDTH * HEIGHT * 4, FRAME_OFFSET).reshape(
        HEIGHT, WIDTH, 4)
    rng = np.random.default_rng(1)
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        colour = (count * 37 % 200 + 20, count * 91 % 200 + 20, count * 53 % 200 + 20)
        area = pixels[:height, :width]
        area[...] = (*colour, 0)
        if noisy:  # a photo-like band: what an RLE codec finds hardest
            area[: height // 4] = rng.integers(0, 256, (height // 4, width, 4), dtype=np.uint8)
        session.display.sequence += 1
        session.display.socket.send(pack([DISPLAY_VERSION, session.display.sequence, WIDTH, HEIGHT, 32, False,
                                          [[0, 0, width, height]]]))
        deadline = time.perf_counter() + 10
        # The bottom-right tile goes out last.
        while session.pixel(width - 2, height - 2) != rgb(colour):
            if time.perf_counter() > deadline:
                raise SystemExit("bench: a frame never reached the client window")
        count += 1
    return count, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--bpp", type=int, default=32)
    args = parser.parse_args()
    session = Session(args.bpp)
    try:
        print(f"vrdp_fps: {WIDTH}x{HEIGHT} at {args.bpp} bpp, xfreerdp on loopback; {machine()}")
        for name, width, height, noisy in (("full screen, flat colour", WIDTH, HEIGHT, False),
                                           ("full screen, quarter noise", WIDTH, HEIGHT, True),
                                           ("512x384, flat colour", 512, 384, False)):
            server = session.processes[0].pid            # the VRDP server process
            cpu_before = cpu_seconds(server)
            count, elapsed = frames(session, width, height, args.seconds, noisy)
            cpu = (cpu_seconds(server) - cpu_before) / elapsed
            print(f"  {name:28} {count / elapsed:6.1f} frames/s ({count} in {elapsed:.1f} s), "
                  f"server CPU {100 * cpu:.0f} % of one core")
    finally:
        session.close()


if __name__ == "__main__":
    main()
