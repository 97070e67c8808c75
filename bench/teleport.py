"""Teleport downtime and total time against QEMU's live migration, same guests, same machine, same run.

Guests (flat firmware images from tests/guests/programs, 512 MiB RAM, tcg on both sides):
- idle: counter.asm, paced by the PIT (prints a line 100 times a second, sleeps in HLT otherwise);
- dirtying: dirty.asm, writing CHUNK_KIB KiB of non-zero data every 10 ms (100 MiB/s by default).

Ours: source and target VMs started with services.headless.VmProcesses (the target --incoming);
`python -m services.teleport target` in its own process, `... source` in another (as two managers
would run them); downtime = source pause to the target's hand-over acknowledgement (after resume).
QEMU: two qemu-system-x86_64 -accel tcg, the target with -incoming tcp:, `migrate` over QMP with
QEMU's defaults; query-migrate gives total-time and downtime. A migration that has not completed
after --timeout seconds is reported as not converged (and cancelled).

    python bench/teleport.py [--ram 512] [--chunk-kib 1024] [--runs 3] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from _harness import REPO_ROOT, machine  # noqa: F401  (puts the repository on sys.path)

from services.headless import VmProcesses
from services.ipc.spec import LaunchSpec
from tests.guests.build import build_program

QEMU = "qemu-system-x86_64"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ours(image_path: str, ram: int, settle: float) -> dict:
    def spec(incoming):
        return LaunchSpec(vm_id="bt" + uuid.uuid4().hex[:8], memory_mib=ram, accel="tcg", firmware=image_path,
                          boot=(), incoming=incoming)
    source, target = VmProcesses(spec(False)), VmProcesses(spec(True))
    source.start()
    target.start()
    try:
        time.sleep(settle)                 # let the guest run (and the idle one settle)
        port = free_port()
        python = sys.executable
        waiter = subprocess.Popen([python, "-m", "services.teleport", "target", "--vm-id", target.spec.vm_id,
                                   "--address", "127.0.0.1", "--port", str(port), "--wait", "120"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO_ROOT)
        assert waiter.stdout.readline().startswith("listening")
        sender = subprocess.run([python, *os.environ.get("TP_SOURCE_PREFIX", "-m services.teleport").split(), "source", "--vm-id", source.spec.vm_id,
                                 "--host", "127.0.0.1", "--port", str(port)],
                                capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
        waiter.wait(30)
        if sender.returncode != 0:
            raise RuntimeError(sender.stderr.strip().splitlines()[-1])
        return json.loads(sender.stdout.strip().splitlines()[-1])
    finally:
        for vm in (source, target):
            vm.kill()


class Qmp:
    def __init__(self, path: str):
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")
        self.file.readline()               # greeting
        self.command("qmp_capabilities")

    def command(self, name: str, **arguments) -> dict:
        self.file.write(json.dumps({"execute": name, "arguments": arguments}) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "return" in reply or "error" in reply:
                return reply

    def close(self):
        self.sock.close()


def qemu(image_path: str, ram: int, settle: float, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = [QEMU, "-accel", "tcg", "-M", "pc", "-m", str(ram), "-bios", image_path, "-display", "none",
                "-nodefaults", "-no-reboot"]
        procs = []
        try:
            procs.append(subprocess.Popen(base + ["-qmp", f"unix:{tmp}/t.sock,server=on,wait=off",
                                                  "-incoming", f"tcp:127.0.0.1:{port}"]))
            procs.append(subprocess.Popen(base + ["-qmp", f"unix:{tmp}/s.sock,server=on,wait=off"]))
            target, source = Qmp(f"{tmp}/t.sock"), Qmp(f"{tmp}/s.sock")
            time.sleep(settle)
            source.command("migrate", uri=f"tcp:127.0.0.1:{port}")
            deadline = time.monotonic() + timeout
            while True:
                info = source.command("query-migrate")["return"]
                if info.get("status") in ("completed", "failed"):
                    break
                if time.monotonic() > deadline:
                    source.command("migrate_cancel")
                    return {"converged": False, "after_s": timeout,
                            "dirty_rate_pages_s": info.get("ram", {}).get("dirty-pages-rate")}
                time.sleep(0.02)
            if info["status"] != "completed":
                raise RuntimeError(f"QEMU migration failed: {info}")
            return {"converged": True, "downtime_ms": info["downtime"], "total_ms": info["total-time"]}
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ram", type=int, default=512, metavar="MiB")
    parser.add_argument("--chunk-kib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0, metavar="S")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S")
    parser.add_argument("--no-qemu", action="store_true", help="ours only (profiling)")
    args = parser.parse_args()
    print(machine())
    guests = {"idle": build_program("counter"),
              "dirtying": build_program("dirty", {"CHUNK_KIB": args.chunk_kib})}
    with tempfile.TemporaryDirectory() as tmp:
        for name, image in guests.items():
            path = os.path.join(tmp, f"{name}.bin")
            with open(path, "wb") as f:
                f.write(image)
            mine = [ours(path, args.ram, args.settle) for _ in range(args.runs)]
            peer = [] if args.no_qemu else [qemu(path, args.ram, args.settle, args.timeout)
                                            for _ in range(args.runs)]
            down = statistics.median(r["downtime_ms"] for r in mine)
            total = statistics.median(r["total_ms"] for r in mine)
            print(f"\n{name} guest, {args.ram} MiB (median of {args.runs}):")
            print(f"  ours: downtime {down:.0f} ms, total {total:.0f} ms, rounds "
                  f"{[r['rounds'] for r in mine]}, throttle {[r['throttle'] for r in mine]}, "
                  f"sent {statistics.median(r['bytes_sent'] for r in mine) / 2**20:.1f} MiB")
            print(f"  ours, downtime by step (ms): {[r['phases'] for r in mine]}")
            done = [r for r in peer if r["converged"]]
            if not peer:
                continue
            if done:
                qdown = statistics.median(r["downtime_ms"] for r in done)
                qtotal = statistics.median(r["total_ms"] for r in done)
                print(f"  QEMU: downtime {qdown:.0f} ms, total {qtotal:.0f} ms ({len(done)}/{len(peer)} converged)")
                print(f"  ratio ours/QEMU: downtime {down / max(qdown, 1):.2f}x, total {total / qtotal:.2f}x")
            else:
                print(f"  QEMU: did not converge within {args.timeout:.0f} s in any run (its default "
                      f"bandwidth cap); ours converged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
