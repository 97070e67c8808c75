"""Shared helpers for the benchmarks in bench/ (DESIGN.md §6).

- build(name, defines): assembles bench/programs/<name>.asm with nasm (include path: bench/programs
  and tests/guests/programs, so common.inc is shared with the CPU test programs), cached in
  <repo>/build/bench keyed by a hash of the sources and the defines.
- run_ours(accel, image): tests.guests.runner.run_program; ProgramResult.times are host timestamps
  of every debug-port byte.
- run_qemu(image): the same image under QEMU TCG, isa-debugcon connected to a unix socket this
  process listens on; a reader thread drains it continuously and timestamps every byte as it
  arrives (research/peers.md §3).
- span(result, a, b): seconds between the debug-port bytes a and b (markers).
- machine(): one line describing the host, for the printed reports and bench/RESULTS.md.
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

BENCH_PROGRAMS = REPO_ROOT / "bench" / "programs"
TEST_PROGRAMS = REPO_ROOT / "tests" / "guests" / "programs"
CACHE_DIR = REPO_ROOT / "build" / "bench"
IMAGE_UNIT = 64 * 1024
DEBUG_PORT = 0xE9
EXIT_PORT = 0xF4


# -- building ---------------------------------------------------------------------------------
def build(name: str, defines: dict[str, object] | None = None) -> bytes:
    defines = dict(defines or {})
    src = BENCH_PROGRAMS / f"{name}.asm"
    h = hashlib.sha256(b"bench-v1\0" + src.read_bytes())
    for d in (BENCH_PROGRAMS, TEST_PROGRAMS):
        for inc in sorted(d.glob("*.inc")):
            h.update(str(inc).encode() + b"\0" + inc.read_bytes())
    for key in sorted(defines):
        h.update(f"-D{key}={defines[key]}\0".encode())
    cached = CACHE_DIR / f"{name}-{h.hexdigest()[:24]}.bin"
    if cached.is_file():
        return cached.read_bytes()
    nasm = shutil.which("nasm")
    if not nasm:
        raise RuntimeError("nasm is missing: run scripts/setup")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [nasm, "-f", "bin", "-I", str(BENCH_PROGRAMS) + os.sep, "-I", str(TEST_PROGRAMS) + os.sep]
    cmd += [f"-D{k}={v}" for k, v in sorted(defines.items())]
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        out = Path(tmp) / "out.bin"
        proc = subprocess.run(cmd + ["-o", str(out), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nasm failed on {src.name}:\n{proc.stdout}{proc.stderr}")
        image = out.read_bytes()
        if not image or len(image) % IMAGE_UNIT:
            raise RuntimeError(f"{src.name}: image is {len(image)} bytes, not a multiple of 64 KiB")
        os.replace(out, cached)
    return image


# -- running ----------------------------------------------------------------------------------
@dataclass
class Run:
    output: bytes = b""
    times: list[float] = field(default_factory=list)
    exit_code: int | None = None
    stop: str = ""
    cpu_s: float | None = None      # CPU time of the process that ran the guest, when known

    @property
    def text(self) -> str:
        return self.output.decode("latin-1")


def run_ours(accel: str, image: bytes, timeout: float = 60.0) -> Run:
    from tests.guests.runner import run_program
    c0 = time.process_time()
    r = run_program(accel, image, timeout=timeout)
    return Run(r.output, list(r.times), r.exit_code, r.stop, time.process_time() - c0)


def qemu_version() -> str:
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        return "missing"
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    return out.split("\n")[0].replace("QEMU emulator version ", "")


def run_qemu(image: bytes, timeout: float = 60.0, ram_mib: int = 32, extra: list[str] | None = None) -> Run:
    """Run `image` as the BIOS of QEMU TCG; every debugcon byte is timestamped on arrival."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise RuntimeError("qemu-system-x86_64 is missing: run scripts/setup")
    with tempfile.TemporaryDirectory(prefix="hb-bench-") as tmp:
        bios = os.path.join(tmp, "prog.bin")
        with open(bios, "wb") as f:
            f.write(image)
        path = os.path.join(tmp, "dbg.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(10)
        run = Run()
        cmd = [qemu, "-accel", "tcg", "-M", "pc", "-m", str(ram_mib), "-smp", "1",
               "-bios", bios, "-display", "none", "-nodefaults", "-no-reboot", "-monitor", "none",
               "-chardev", f"socket,id=dbg,path={path},server=off",
               "-device", f"isa-debugcon,iobase={DEBUG_PORT:#x},chardev=dbg",
               "-device", f"isa-debug-exit,iobase={EXIT_PORT:#x},iosize=1"] + (extra or [])
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            proc.kill()
            raise RuntimeError("QEMU did not connect its debugcon: " + proc.communicate()[1].decode())

        def reader():
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                now = time.monotonic() - t0
                run.output += data
                run.times.extend([now] * len(data))

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        thread.join(5)
        conn.close()
        listener.close()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        run.cpu_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        run.stop = "poweroff" if code is not None else "timeout"
        run.exit_code = (code >> 1) if code is not None and code & 1 else None
        return run


def span(run: Run, a: str, b: str) -> float:
    """Seconds between the first debug-port byte `a` and the first `b` after it."""
    out = run.text
    i = out.find(a)
    j = out.find(b, i + 1)
    if i < 0 or j < 0:
        raise RuntimeError(f"markers {a!r}/{b!r} missing in output {out[-200:]!r} (stop {run.stop})")
    return run.times[j] - run.times[i]


def check(run: Run, what: str) -> None:
    if run.exit_code != 0:
        raise RuntimeError(f"{what}: exit {run.exit_code} stop {run.stop}, output {run.text[-300:]!r}")


# -- reporting --------------------------------------------------------------------------------
def median(xs):
    return statistics.median(xs)


def percentile(xs, p: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def machine() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kvm = "none"
    if os.path.exists("/dev/kvm"):
        kvm = next((m for m in ("kvm_pvm", "kvm_intel", "kvm_amd") if os.path.isdir(f"/sys/module/{m}")), "kvm")
    import unicorn
    return (f"{os.cpu_count()} cores {model}; /dev/kvm={kvm}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; Unicorn {unicorn.__version__}; QEMU {qemu_version()}")


def revision() -> str:
    """HEAD of the repository, and whether the engine sources differ from it (a shared tree)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "services"],
                               capture_output=True, text=True).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
    except OSError:
        return "?"
    return head + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")


def header(title: str) -> None:
    print(f"# {title}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  {machine()}; load average {load}")
    print(f"# revision {revision()}")


def table(rows: list[list[str]], head: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(fmt.format(*head))
    print(fmt.format(*["-" * w for w in widths]))
    for r in rows:
        print(fmt.format(*[str(x) for x in r]))
