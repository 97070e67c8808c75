"""Time of `VBoxManage list vms` with 50 registered VMs, process start to output, the manager running:
p50/p90 of 20 runs against the 150 ms target (there is no VirtualBox on this machine to compare with)."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.manager.client import connect_or_start

TARGET_MS = 150.0


def vboxmanage() -> str:
    """The console script of this interpreter's install (a pyenv shim on PATH would add its own start)."""
    beside = os.path.join(os.path.dirname(sys.executable), "VBoxManage")
    found = beside if os.access(beside, os.X_OK) else shutil.which("VBoxManage")
    if not found:
        raise SystemExit("VBoxManage is not installed: pip install -e . (scripts/setup)")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    command = vboxmanage()
    with tempfile.TemporaryDirectory(prefix="hbx-bench-") as home:
        env = {**os.environ, "VBOX_USER_HOME": home, "XDG_RUNTIME_DIR": os.path.join(home, "run")}
        os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
        os.environ.update(env)              # the daemon started below inherits the temp home
        client = connect_or_start(home)
        try:
            for n in range(args.vms):
                client.request("createvm", name=f"bench-vm-{n:02d}", ostype="Debian_64", register=True)
            subprocess.run([command, "list", "vms"], env=env, check=True, capture_output=True)   # warm caches
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                done = subprocess.run([command, "list", "vms"], env=env, capture_output=True, text=True)
                times.append((time.perf_counter() - start) * 1000)
                if done.returncode != 0 or len(done.stdout.splitlines()) != args.vms:
                    raise SystemExit(f"list vms failed: {done.returncode} {done.stderr.strip()}")
        finally:
            try:
                client.request("shutdown")
            finally:
                client.close()
    times.sort()
    p50 = statistics.median(times)
    p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
    print(f"VBoxManage list vms, {args.vms} VMs, {args.runs} runs ({command})")
    print(f"  ours:      p50 {p50:6.1f} ms   p90 {p90:6.1f} ms   min {times[0]:.1f} ms")
    print(f"  reference: target {TARGET_MS:.0f} ms (no VirtualBox here)   ratio p50/target {p50 / TARGET_MS:.2f}, "
          f"p90/target {p90 / TARGET_MS:.2f}")
    return 0 if p90 <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
