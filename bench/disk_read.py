"""Guest sequential read throughput from an IDE disk: ours (tcg) vs QEMU TCG, the same VDI image.

The image: a VDI made with services/images/image.py create_disk (256 MiB, dynamic), every
block written with non-zero data, so every read reaches the file. It is cached in build/bench.
The host's page cache is warmed (the file read once) before each VM starts.

Both VMs boot the Linux test ISO (IDE CD-ROM, 512 MiB) with the image as the primary master:
ours `LaunchSpec(drives=[Drive(0, 0, "hdd", IMG), Drive(1, 0, "dvd", ISO)])`, QEMU `-drive file=IMG,format=vdi,if=ide,
index=0,media=disk -cdrom ISO -boot d` (+ -nodefaults -vga std, as boot_time.py). Linux's ata_piix
drives both (bus-master DMA). On the serial console, --runs times (3):

    echo 3 > /proc/sys/vm/drop_caches; echo DD$((1+1))GO; dd if=/dev/sda of=/dev/null bs=1M count=N; echo DD$((2+1))END $(cat /proc/uptime)

(drop_caches before each read, so the guest's page cache never serves it). The rate is N MiB over
the host time between the DD2GO and DD3END lines arriving on serial (the guest's own dd/uptime
figures are printed too). Medians are compared. --profile (default on) reads once more with
py-spy attached to our vCPU and device processes, and prints where their main threads were.

`python bench/disk_read.py [--mib 200] [--runs 3] [--no-profile]`
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import CACHE_DIR, header, median, table  # noqa: E402

from tests.support.guest_vms import OurVm, QemuVm  # noqa: E402

DISK_MIB = 256
BOOT_TIMEOUT = 400
CRASHES: list[str] = []


def make_image() -> str:
    from services.images import vdi
    from services.images.image import create_disk
    path = CACHE_DIR / f"disk-read-{DISK_MIB}m-v1.vdi"
    if path.is_file():
        return str(path)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = str(path) + f".tmp{os.getpid()}"
    create_disk(tmp, DISK_MIB)
    chunk = bytearray(os.urandom(1 << 20))
    with vdi.open(tmp) as image:
        for mib in range(DISK_MIB):
            chunk[:8] = mib.to_bytes(8, "little")
            image.write(mib << 20, bytes(chunk))
        image.flush()
    os.replace(tmp, path)
    return str(path)


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def command(mib: int) -> str:
    return (f"echo 3 > /proc/sys/vm/drop_caches; echo DD$((1+1))GO; "
            f"dd if=/dev/sda of=/dev/null bs=1M count={mib}; echo DD$((2+1))END $(cat /proc/uptime)\n")


def read_once(vm, mib: int, timeout: float) -> dict:
    mark = vm.type(command(mib))
    go = vm.serial.wait(b"DD2GO", timeout, after=mark, alive=vm.alive)
    end = vm.serial.wait(b"DD3END", timeout, after=go, alive=vm.alive)
    vm.serial.wait(b"guest# ", 30, after=end, alive=vm.alive)
    host_s = vm.serial.time_of(end + 5) - vm.serial.time_of(go + 4)
    out = vm.serial.text(go)
    m = re.search(r"copied, ([0-9.]+) ?s", out)
    return {"host_s": host_s, "mbs": mib * 1.048576 / host_s, "guest_dd_s": float(m.group(1)) if m else None,
            "dd": " | ".join(line.strip() for line in out.splitlines()[1:4])}


def session(vm, who: str, mib: int, runs: int, profile_dir: str | None = None) -> list[dict]:
    vm.start()
    try:
        ready = vm.serial.wait(b"GUEST-READY", BOOT_TIMEOUT, alive=vm.alive)
        vm.serial.wait(b"guest# ", 60, after=ready, alive=vm.alive)
        time.sleep(1)
        results = []
        for i in range(runs):
            try:
                r = read_once(vm, mib, 300)
            except TimeoutError as error:
                if vm.alive():
                    raise
                print(f"{who:4} read {i + 1}: THE VM DIED during the read (see the vcpu log above); "
                      f"serial ends with: {vm.serial.text()[-200:]!r}", flush=True)
                CRASHES.append(who)
                return results
            r["session"] = len(CRASHES)
            results.append(r)
            print(f"{who:4} read {i + 1}: {mib} MiB in {r['host_s']:.2f} s host time = {r['mbs']:.1f} MB/s; "
                  f"guest dd: {r['dd']}", flush=True)
        if profile_dir:
            profile_read(vm, mib, profile_dir)
        return results
    finally:
        vm.stop()


def profile_read(vm, mib: int, outdir: str) -> None:
    pyspy = shutil.which("py-spy")
    if not pyspy:
        print("py-spy is missing (pip install py-spy): no profile")
        return
    procs = []
    for role, pid in (("vcpu", vm.vcpu_pid), ("devices", vm.devices_pid)):
        procs.append(subprocess.Popen(
            [pyspy, "record", "--pid", str(pid), "--idle", "--nonblocking", "--threads", "--rate", "200",
             "--format", "raw", "-o", os.path.join(outdir, f"disk-{role}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1)
    r = read_once(vm, mib, 900)
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        proc.wait(30)
    print(f"\n## Profiled read of ours (py-spy --idle --nonblocking, 200 Hz): {r['mbs']:.1f} MB/s under the profiler")
    for role in ("vcpu", "devices"):
        path = os.path.join(outdir, f"disk-{role}.txt")
        if not os.path.exists(path):
            continue
        kinds, leaves, total = collections.Counter(), collections.Counter(), 0
        with open(path) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if "MainThread" not in stack.split(";", 1)[0]:
                    continue
                n = int(count)
                total += n
                frames = [re.sub(r":\d+\)", ")", fr) for fr in stack.split(";")[1:]]
                names = [fr.split(" (")[0] for fr in frames]
                leaves[frames[-1] if frames else "?"] += n
                # the deepest frame of our own code (services/...), as the place the time goes
                ours = [fr for fr in frames if "services/" in fr]
                kinds[ours[-1] if ours else (frames[-1] if frames else "?")] += n
                _ = names
        print(f"\n### {role} process, main thread: {total} samples (samples include waiting)")
        table([[k[:120], n, f"{100 * n / total:.0f} %"] for k, n in kinds.most_common(10)],
              ["deepest frame in services/", "samples", "share"])
        print()
        table([[k[:120], n, f"{100 * n / total:.0f} %"] for k, n in leaves.most_common(6)],
              ["innermost frame", "samples", "share"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=200, help="MiB read per run (the disk has 256)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    args = parser.parse_args()
    from services.demo.linux_iso import linux_iso
    iso = str(linux_iso())
    image = make_image()
    header("Guest sequential read from the IDE disk (dd bs=1M), ours tcg vs QEMU TCG")
    print(f"# image {image} (VDI, {DISK_MIB} MiB, all blocks allocated); {args.mib} MiB per read; "
          f"guest RAM 512 MiB; drop_caches before each read")
    warm(image)
    q = session(QemuVm(["-drive", f"file={image},format=vdi,if=ide,index=0,media=disk",
                        "-cdrom", iso, "-boot", "d"], memory_mib=512), "qemu", args.mib, args.runs)
    warm(image)
    outdir = tempfile.mkdtemp(prefix="hb-bench-disk-") if args.profile else None
    try:
        o = []
        for attempt in range(3):    # a VM that dies mid-read is rebooted (and reported)
            o += session(OurVm(iso=iso, hdd=image, memory_mib=512, accel="tcg"), "ours", args.mib,
                         args.runs - len(o), profile_dir=outdir)
            if len(o) >= args.runs:
                break
            warm(image)
    finally:
        if outdir:
            shutil.rmtree(outdir, ignore_errors=True)
    om, qm = median([r["mbs"] for r in o]), median([r["mbs"] for r in q])
    print()
    table([["sequential read, dd bs=1M from /dev/sda (MB/s, 10^6 B)",
            f"{om:.1f} ({min(r['mbs'] for r in o):.1f}-{max(r['mbs'] for r in o):.1f})",
            f"{qm:.1f} ({min(r['mbs'] for r in q):.1f}-{max(r['mbs'] for r in q):.1f})", f"{om / qm:.2f}"]],
          ["figure", "ours median (min-max)", "QEMU median (min-max)", "ours/QEMU"])
    print(f"\nours/QEMU = {om / qm:.2f} (target >= 0.5: {'met' if om / qm >= 0.5 else 'NOT met'})")
    if CRASHES:
        print(f"VMs that died during a read: {', '.join(CRASHES)} (rebooted and continued)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
