"""Boot time of the Linux test ISO: process start -> GUEST-READY on serial, ours (tcg) vs QEMU TCG.

Both VMs: 512 MiB, the ISO on the IDE CD-ROM (secondary master), SeaBIOS /usr/share/seabios/bios.bin
(our default firmware; QEMU gets it with -bios, so both run the same firmware build), boot from
the CD. QEMU: `qemu-system-x86_64 -accel tcg -m 512 -nodefaults -vga std -display none -cdrom ISO
-boot d -bios bios.bin -serial <unix socket> -device isa-debugcon,iobase=0x402,...`.
Ours: services.headless.VmProcesses(LaunchSpec(memory_mib=512, accel="tcg", drives=[Drive(1, 0, "dvd", ISO)])).

Milestones, in seconds since the VM's first process started (tests/support/guest_vms.py says how each output is
timestamped): SeaBIOS's first debug-port byte, "Booting from" (SeaBIOS hands over to the boot
sector), GRUB-LINUX, GRUB-INITRD, GRUB-BOOT (printed by GRUB), GUEST-READY (printed by /init).
Runs alternate QEMU, ours; n=3 each (--runs); the medians are compared.

--profile (on by default; --no-profile skips it) boots ours once more with
  - bench/_probe (sitecustomize): counters and timers around every engine hook and io-channel call
    (calls and wall time per phase; see bench/_probe/sitecustomize.py);
  - py-spy record --idle --nonblocking of the vCPU process, one profile per phase;
  - perf record of the vCPU process, one per phase, reported by shared object (JIT code shows as
    an anonymous mapping, Unicorn's helpers as libunicorn, hooks as the Python interpreter).
The profiled boot is slower than the timed ones; only its split is reported.

`python bench/boot_time.py [--runs 3] [--no-profile] [--keep DIR]`
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import REPO_ROOT, header, median, table  # noqa: E402

from tests.support.guest_vms import SEABIOS, OurVm, QemuVm  # noqa: E402

MILESTONES = ["SeaBIOS 1st byte", "firmware hand-over", "GRUB-LINUX", "GRUB-INITRD", "GRUB-BOOT", "GUEST-READY"]
SERIAL_MARKS = ["GRUB-LINUX", "GRUB-INITRD", "GRUB-BOOT", "GUEST-READY"]
PHASES = [("firmware (SeaBIOS, to the boot sector)", None, "firmware hand-over"),
          ("GRUB starts (core.img + modules via int13)", "firmware hand-over", "GRUB-LINUX"),
          ("GRUB loads kernel + initrd (int13, ATAPI PIO)", "GRUB-LINUX", "GRUB-BOOT"),
          ("Linux boots to /init's GUEST-READY", "GRUB-BOOT", "GUEST-READY")]
BOOT_TIMEOUT = 300


def wait_milestones(vm, timeout: float, on_mark=None) -> dict[str, float]:
    """Waits for every milestone in order; returns their times. on_mark(name, t) is called as
    each one is seen (the profiler switches phases there)."""
    deadline = time.monotonic() + timeout
    times = {}
    for name in MILESTONES:
        left = deadline - time.monotonic()
        if name == "SeaBIOS 1st byte":
            _wait_any(vm.debug, left, vm.alive)
            t = vm.debug.first()
        elif name == "firmware hand-over":
            pos = vm.debug.wait(b"Booting from", left, alive=vm.alive)
            t = vm.debug.time_of(pos + len("Booting from") - 1)
        else:
            marker = name.encode()
            pos = vm.serial.wait(marker, left, alive=vm.alive)
            t = vm.serial.time_of(pos + len(marker) - 1)
        times[name] = t
        if on_mark:
            on_mark(name, t)
    return times


def _wait_any(stream, timeout, alive):
    deadline = time.monotonic() + timeout
    while not stream.chunks:
        if time.monotonic() > deadline or not alive():
            raise TimeoutError("no debug-port output")
        time.sleep(0.005)


def boot_qemu(iso: str) -> dict[str, float]:
    vm = QemuVm(["-cdrom", iso, "-boot", "d"], memory_mib=512)
    try:
        vm.start()
        return wait_milestones(vm, BOOT_TIMEOUT)
    finally:
        vm.stop()


def boot_ours(iso: str) -> dict[str, float]:
    vm = OurVm(iso=iso, memory_mib=512, accel="tcg", boot=("dvd", "disk"))
    try:
        vm.start()
        return wait_milestones(vm, BOOT_TIMEOUT)
    finally:
        vm.stop()


# -- the profiled boot ------------------------------------------------------------------------
class Sampler:
    """py-spy and perf on one process, restarted at each phase boundary."""

    def __init__(self, pid: int, outdir: str):
        self.pid, self.outdir = pid, outdir
        self.procs: list[subprocess.Popen] = []
        self.pyspy = shutil.which("py-spy")
        self.perf = shutil.which("perf")

    def begin(self, phase: int) -> None:
        if self.pyspy:
            self.procs.append(subprocess.Popen(
                [self.pyspy, "record", "--pid", str(self.pid), "--idle", "--nonblocking", "--threads",
                 "--rate", "200", "--format", "raw", "-o", os.path.join(self.outdir, f"pyspy-{phase}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if self.perf:
            self.procs.append(subprocess.Popen(
                [self.perf, "record", "-F", "499", "-p", str(self.pid), "-o",
                 os.path.join(self.outdir, f"perf-{phase}.data")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def end(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []


def profile_ours(iso: str, outdir: str) -> dict:
    probe_dir = os.path.join(outdir, "probe")
    os.makedirs(probe_dir, exist_ok=True)
    env = {"HB_BENCH_PROBE": probe_dir,
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "bench" / "_probe"), str(REPO_ROOT)]
                                         + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    vm = OurVm(iso=iso, memory_mib=512, accel="tcg", boot=("dvd", "disk"))
    sampler = None
    boundaries = {"firmware hand-over": 1, "GRUB-LINUX": 2, "GRUB-BOOT": 3}

    def on_mark(name, _t):
        if name in boundaries and sampler is not None:
            sampler.end()
            sampler.begin(boundaries[name])

    try:
        vm.start(env_extra=env)
        # The interpreter must be up before py-spy can attach: wait for the probe's first line.
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(probe_dir, "vcpu.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.01)
        sampler = Sampler(vm.vcpu_pid, outdir)
        sampler.begin(0)
        times = wait_milestones(vm, BOOT_TIMEOUT * 2, on_mark=on_mark)
        sampler.end()
        time.sleep(0.2)    # one more probe line after GUEST-READY
    finally:
        if sampler:
            sampler.end()
        vm.stop()
    return {"times": times, "t0": vm.t0, "probe_dir": probe_dir}


def load_probe(path: str, t0: float) -> list[tuple[float, dict]]:
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                rows.append((row["t"] - t0, row["c"]))
    return rows


def at(rows, t: float) -> dict:
    """The counters of the last probe line at or before time t (50 ms resolution)."""
    best = {}
    for tr, c in rows:
        if tr <= t:
            best = c
        else:
            break
    return best


def delta(a: dict, b: dict) -> dict:
    out = {}
    for k, (n, ns) in b.items():
        n0, ns0 = a.get(k, (0, 0))
        if n - n0:
            out[k] = (n - n0, ns - ns0)
    return out


def group(d: dict) -> dict:
    """Per-port keys folded into named groups."""
    names = {0x3f8: "COM1", 0x3f9: "COM1", 0x3fa: "COM1", 0x3fb: "COM1", 0x3fc: "COM1", 0x3fd: "COM1",
             0x3fe: "COM1", 0x3ff: "COM1", 0x402: "debugcon", 0x510: "fw_cfg", 0x511: "fw_cfg",
             0x514: "fw_cfg", 0x518: "fw_cfg", 0xcf8: "PCI cfg", 0xcfc: "PCI cfg", 0xcfd: "PCI cfg",
             0xcfe: "PCI cfg", 0xcff: "PCI cfg", 0x40: "PIT", 0x41: "PIT", 0x42: "PIT", 0x43: "PIT",
             0x20: "PIC", 0x21: "PIC", 0xa0: "PIC", 0xa1: "PIC", 0x60: "i8042", 0x64: "i8042",
             0x70: "CMOS", 0x71: "CMOS", 0x80: "POST 0x80", 0x61: "port 0x61", 0x92: "port 0x92"}
    out = collections.defaultdict(lambda: [0, 0])
    for k, (n, ns) in d.items():
        m = re.fullmatch(r"(in|out|dev-in|dev-out|dev-ins):(0x[0-9a-f]+)", k)
        if m:
            port = int(m.group(2), 16)
            if port in names:
                label = names[port]
            elif 0x170 <= port <= 0x177 or port == 0x376:
                label = "IDE ch1 (CD)"
            elif 0x1f0 <= port <= 0x1f7 or port == 0x3f6:
                label = "IDE ch0 (disk)"
            elif 0x3c0 <= port <= 0x3df or port in (0x1ce, 0x1cf):
                label = "VGA"
            elif 0xb000 <= port <= 0xb03f or 0x600 <= port <= 0x63f:
                label = "ACPI PM"
            else:
                label = f"{port:#x}"
            k = f"{m.group(1)} {label}"
        out[k][0] += n
        out[k][1] += ns
    return dict(out)


HOOKS = ("in ", "out ", "mmio-bus", "lapic", "ioapic", "interrupt", "syscall", "invalid")


def report_probe(run: dict) -> None:
    rows = load_probe(os.path.join(run["probe_dir"], "vcpu.jsonl"), run["t0"])
    drows = load_probe(os.path.join(run["probe_dir"], "devices.jsonl"), run["t0"])
    times = run["times"]
    print("\n## Where the time goes (profiled boot of ours; bench/_probe counters, wall time)")
    print("times of the profiled boot: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    summary = []
    for label, a, b in PHASES:
        ta = 0.0 if a is None else times[a]
        tb = times[b]
        d = group(delta(at(rows, ta), at(rows, tb)))
        dd = group(delta(at(drows, ta), at(drows, tb)))
        wall = tb - ta
        jit = d.get("jit", (0, 0))
        hooks_ns = sum(ns for k, (n, ns) in d.items() if k.startswith(HOOKS))
        hook_calls = sum(n for k, (n, ns) in d.items() if k.startswith(HOOKS))
        rt = {k: v for k, v in d.items() if k.startswith("rt:")}
        rt_ns = sum(ns for n, ns in rt.values())
        rt_n = sum(n for n, ns in rt.values())
        idle = d.get("idle", (0, 0))[1]
        deliver_loop = 0   # deliveries outside hooks (external interrupts from the run loop)
        guest = jit[1] - hooks_ns
        other = wall * 1e9 - jit[1] - idle
        print(f"\n### {label}: {wall:.2f} s (probe resolution 50 ms)")
        print(f"JIT entries (emu_start) {jit[0]:,}; hook calls {hook_calls:,}; io-channel round trips {rt_n:,}")
        parts = [("guest code in the JIT (emu_start minus hooks)", guest),
                 ("hooks in Python, excluding io-channel round trips", hooks_ns - rt_ns),
                 ("io-channel round trips (inside hooks)", rt_ns),
                 ("HLT idle", idle),
                 ("run loop between JIT entries (interrupt delivery, timers, purges)", other)]
        table([[name, f"{ns / 1e9:.2f}", f"{100 * ns / (wall * 1e9):.0f} %"] for name, ns in parts],
              ["part", "s", "share"])
        top = sorted(((k, n, ns) for k, (n, ns) in d.items() if k != "jit"), key=lambda x: -x[2])[:12]
        print()
        table([[k, f"{n:,}", f"{ns / 1e9:.3f}", f"{ns / n / 1e3:.1f}" if n else "-"] for k, n, ns in top],
              ["vCPU-side counter", "calls", "s", "us/call"])
        if dd:
            topd = sorted(dd.items(), key=lambda x: -x[1][1])[:6]
            print()
            table([[k, f"{n:,}", f"{ns / 1e9:.3f}"] for k, (n, ns) in topd], ["device-process counter", "calls", "s"])
        summary.append((label, wall, guest, hooks_ns - rt_ns, rt_ns, idle, other, jit[0], hook_calls, rt_n))
    print("\n### Summary (s)")
    table([[s[0], f"{s[1]:.2f}", f"{s[2] / 1e9:.2f}", f"{s[3] / 1e9:.2f}", f"{s[4] / 1e9:.2f}", f"{s[5] / 1e9:.2f}",
            f"{s[6] / 1e9:.2f}", f"{s[7]:,}", f"{s[8]:,}", f"{s[9]:,}"] for s in summary],
          ["phase", "wall", "guest JIT", "hooks", "io rt", "idle", "loop", "JIT entries", "hook calls", "round trips"])


def classify_pyspy(path: str) -> tuple[collections.Counter, collections.Counter, int]:
    """Main-thread samples by what the vCPU thread was doing, and by innermost Python function."""
    kinds, leaves, total = collections.Counter(), collections.Counter(), 0
    if not os.path.exists(path):
        return kinds, leaves, 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if "MainThread" not in stack.split(";", 1)[0]:
                continue
            n = int(count)
            total += n
            frames = stack.split(";")[1:]
            names = [fr.split(" (")[0] for fr in frames]
            leaf = frames[-1] if frames else "?"
            leaves[re.sub(r":\d+\)", ")", leaf)] += n
            if "RemoteBus._read" in names:
                kind = "io-channel round trip (RemoteBus._read)"
            elif "TcgEngine._idle" in names:
                kind = "HLT idle"
            elif names and names[-1] == "Uc.emu_start":
                kind = "native: JIT code, Unicorn helpers, callback entry (emu_start)"
            elif "Uc.emu_start" in names:
                if "sitecustomize" in leaf:
                    kind = "bench probe wrappers (overhead of this profile)"
                elif "unicorn_py3" in leaf or "ctypes" in leaf:
                    kind = "Unicorn's Python callback wrappers"
                else:
                    kind = "our hook code (Python, services/)"
            else:
                kind = "run loop outside the JIT"
            kinds[kind] += n
    return kinds, leaves, total


def report_samplers(outdir: str) -> None:
    labels = [p[0] for p in PHASES]
    print("\n## py-spy (vCPU process, main thread, --idle, 200 Hz), per phase")
    for i, label in enumerate(labels):
        kinds, leaves, total = classify_pyspy(os.path.join(outdir, f"pyspy-{i}.txt"))
        if not total:
            continue
        print(f"\n### {label}: {total} samples")
        table([[k, n, f"{100 * n / total:.0f} %"] for k, n in kinds.most_common()], ["what", "samples", "share"])
        print()
        table([[k[:110], n, f"{100 * n / total:.0f} %"] for k, n in leaves.most_common(8)],
              ["innermost Python frame", "samples", "share"])
    perf = shutil.which("perf")
    if not perf:
        return
    print("\n## perf (vCPU process, all threads, 499 Hz), per phase: shared objects, then symbols")
    for i, label in enumerate(labels):
        data = os.path.join(outdir, f"perf-{i}.data")
        if not os.path.exists(data):
            continue
        print(f"\n### {label}")
        for sort, limit in (("dso", 8), ("dso,sym", 14)):
            out = subprocess.run([perf, "report", "-i", data, "--stdio", "--sort", sort, "--percent-limit", "1"],
                                 capture_output=True, text=True).stdout
            lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("#")]
            print("\n".join(lines[:limit]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--keep", help="keep the profiles in this directory")
    args = parser.parse_args()
    from services.demo.linux_iso import linux_iso
    iso = str(linux_iso())
    header("Linux test ISO boot time: start -> GUEST-READY on serial (ours tcg vs QEMU TCG)")
    print(f"# ISO {iso} ({os.path.getsize(iso):,} bytes); 512 MiB; SeaBIOS {SEABIOS} for both")
    results = {"ours": [], "qemu": []}
    for i in range(args.runs):
        for who, fn in (("qemu", boot_qemu), ("ours", boot_ours)):
            t = fn(iso)
            results[who].append(t)
            print(f"run {i + 1} {who:4}: " + "  ".join(f"{k} {v:.2f}" for k, v in t.items()), flush=True)
    rows = []
    for name in MILESTONES:
        o = [r[name] for r in results["ours"]]
        q = [r[name] for r in results["qemu"]]
        rows.append([name, f"{median(o):.2f} ({min(o):.2f}-{max(o):.2f})",
                     f"{median(q):.2f} ({min(q):.2f}-{max(q):.2f})", f"{median(o) / median(q):.1f}x"])
    print()
    table(rows, ["milestone (s since start)", "ours median (min-max)", "QEMU median (min-max)", "ours/QEMU"])
    rows = []
    for label, a, b in PHASES:
        o = [r[b] - (r[a] if a else 0.0) for r in results["ours"]]
        q = [r[b] - (r[a] if a else 0.0) for r in results["qemu"]]
        rows.append([label, f"{median(o):.2f}", f"{median(q):.2f}", f"{median(o) / median(q):.1f}x"])
    print()
    table(rows, ["phase (s)", "ours", "QEMU", "ours/QEMU"])
    ratio = median([r["GUEST-READY"] for r in results["ours"]]) / median([r["GUEST-READY"] for r in results["qemu"]])
    print(f"\nGUEST-READY: ours/QEMU = {ratio:.2f}x (target <= 3x: {'met' if ratio <= 3 else 'NOT met'})", flush=True)
    if args.profile:
        outdir = args.keep or tempfile.mkdtemp(prefix="hb-bench-profile-")
        os.makedirs(outdir, exist_ok=True)
        run = profile_ours(iso, outdir)
        report_probe(run)
        report_samplers(outdir)
        if not args.keep:
            shutil.rmtree(outdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
