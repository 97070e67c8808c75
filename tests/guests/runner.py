"""Runs a small test program (a flat firmware image) on one of our accelerators or on QEMU.

Contract of a test program: a multiple of 64 KiB that starts at the reset vector like a BIOS,
writes ASCII to the debug port 0xE9 and ends with `out 0xF4, al` (AL = exit code)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

from services.hw.memory import GuestMemory, MiB
from services.ipc.shm import PrivateRegion
from services.vcpu.engine import StopReason, create_engine

DEBUG_PORT = 0xE9
EXIT_PORT = 0xF4


@dataclass
class ProgramResult:
    output: bytes = b""
    exit_code: int | None = None
    stop: str = ""
    times: list[float] = field(default_factory=list)  # host time of each output byte, from start

    @property
    def text(self) -> str:
        return self.output.decode("latin-1")


class ProgramBus:
    """The whole platform a test program sees: a debug port and an exit port."""

    def __init__(self):
        self.result = ProgramResult()
        self.engine = None
        self.t0 = time.monotonic()
        self.extra_ports: dict[int, int] = {}

    def _out(self, data: bytes) -> None:
        now = time.monotonic() - self.t0
        self.result.output += data
        self.result.times.extend([now] * len(data))

    def pio_read(self, port, size):
        if port == DEBUG_PORT:
            return 0xE9
        return self.extra_ports.get(port, (1 << (8 * size)) - 1)

    def pio_write(self, port, size, value):
        if port == DEBUG_PORT:
            self._out(bytes([value & 0xFF]))
        elif port == EXIT_PORT:
            self.result.exit_code = value & 0xFF
            self.engine.request_stop(StopReason.POWEROFF)

    def pio_read_string(self, port, size, count):
        return b"".join(self.pio_read(port, size).to_bytes(size, "little") for _ in range(count))

    def pio_write_string(self, port, size, data):
        for i in range(0, len(data), size):
            self.pio_write(port, size, int.from_bytes(data[i:i + size], "little"))

    def mmio_read(self, addr, size):
        return (1 << (8 * size)) - 1

    def mmio_write(self, addr, size, value):
        pass


def run_program(accel: str, image: bytes, *, ram_mib: int = 32, timeout: float = 30.0,
                cpus: int = 1, alongside=None) -> ProgramResult:
    """Run `image` on our `accel` ('kvm' or 'tcg') until it writes the exit port or times out.
    alongside(engine, done): runs in another thread meanwhile, until the Event `done` is set."""
    bus = ProgramBus()
    memory = GuestMemory(PrivateRegion(ram_mib * MiB), image)
    memory.load_firmware_shadow()
    engine = create_engine(accel, memory, bus, cpus)
    bus.engine = engine
    timer = threading.Timer(timeout, engine.request_stop, (StopReason.PAUSED,))
    timer.daemon = True
    timer.start()
    done = threading.Event()
    if alongside is not None:
        threading.Thread(target=alongside, args=(engine, done), daemon=True).start()
    try:
        bus.t0 = time.monotonic()
        while True:
            reason = engine.run()
            if reason == StopReason.RESET:
                engine.reset()
                continue
            break
        bus.result.stop = reason.value if reason != StopReason.PAUSED else "timeout"
    finally:
        done.set()
        timer.cancel()
        engine.close()
    return bus.result


def run_program_qemu(image: bytes, *, ram_mib: int = 32, timeout: float = 30.0,
                     cpus: int = 1) -> ProgramResult:
    """The oracle: the same image under QEMU's TCG with isa-debugcon and isa-debug-exit."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise RuntimeError("qemu-system-x86_64 is missing: run scripts/setup")
    with tempfile.TemporaryDirectory() as tmp:
        bios = os.path.join(tmp, "prog.bin")
        with open(bios, "wb") as f:
            f.write(image)
        out = os.path.join(tmp, "out")
        cmd = [qemu, "-accel", "tcg", "-M", "pc", "-m", str(ram_mib), "-smp", str(cpus),
               "-bios", bios, "-display", "none", "-nodefaults", "-no-reboot",
               "-chardev", f"file,id=dbg,path={out}", "-device", f"isa-debugcon,iobase={DEBUG_PORT:#x},chardev=dbg",
               "-device", f"isa-debug-exit,iobase={EXIT_PORT:#x},iosize=1"]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
        result = ProgramResult(stop="poweroff" if code is not None else "timeout")
        result.output = open(out, "rb").read() if os.path.exists(out) else b""
        # isa-debug-exit makes QEMU exit with (value << 1) | 1.
        result.exit_code = (code >> 1) if code is not None and code & 1 else None
        result.times = [time.monotonic() - t0] * len(result.output)
        return result
