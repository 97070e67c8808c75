"""Tick jitter under a busy guest (issue 19): our tcg accelerator against QEMU TCG, same ISO, same run.

Each VM boots the Linux test ISO (256 MiB), starts two CPU hogs in user mode (`while :; do :; done`
and `md5sum /dev/zero`) and /bin/guest-ticks, which prints "TICK <n> <uptime>" on serial once a
second. Over --seconds of host time we record the host arrival time of every TICK line
(tests/support/guest_vms.py timestamps serial output on arrival; ours is polled every 10 ms) and
report the interval between consecutive lines: p50 and p99 (ideal: 1 s plus what one `sleep 1`
fork/exec costs the guest), the lines per minute, and the guest clock's drift against the host's.

    cd /work/main && python bench/tick_jitter.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import header, median, percentile, table  # noqa: E402

from tests.support.guest_vms import OurVm, QemuVm  # noqa: E402

TICK = re.compile(rb"TICK (\d+) (\d+\.\d+)\r?\n")
HOGS = "while :; do :; done & timeout 100000 md5sum /dev/zero & guest-ticks &\n"


def measure(vm, seconds: float) -> dict[str, float]:
    vm.start()
    try:
        vm.serial.wait(b"guest# ", 300, alive=vm.alive)
        mark = vm.type(HOGS)
        vm.serial.wait(b"TICK 2 ", 60, after=mark, alive=vm.alive)
        start = len(vm.serial.data)
        end_time = vm.serial.time_of(start - 1) + seconds
        time.sleep(seconds + 2)
        ticks = [(vm.serial.time_of(m.end() - 1), float(m.group(2)))
                 for m in TICK.finditer(bytes(vm.serial.data), start)]
        ticks = [t for t in ticks if t[0] <= end_time]
    finally:
        vm.stop()
    intervals = [b[0] - a[0] for a, b in zip(ticks, ticks[1:])]
    host = ticks[-1][0] - ticks[0][0]
    guest = ticks[-1][1] - ticks[0][1]
    return {"p50": median(intervals), "p99": percentile(intervals, 99), "per_minute": len(ticks) * 60 / seconds,
            "drift": (guest - host) / host}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    from services.demo.linux_iso import linux_iso
    iso = str(linux_iso())
    header("Tick jitter with two CPU hogs in the guest: interval between serial TICK lines")
    results = {}
    for who, vm in (("QEMU TCG", QemuVm(["-cdrom", iso, "-boot", "d"], memory_mib=256)),
                    ("ours (tcg)", OurVm(iso=iso, memory_mib=256, accel="tcg"))):
        results[who] = measure(vm, args.seconds)
        print(f"# {who}: {results[who]}", flush=True)
    rows = [[who, f"{r['p50'] * 1000:.0f}", f"{r['p99'] * 1000:.0f}", f"{r['per_minute']:.1f}",
             f"{r['drift'] * 100:+.2f} %"] for who, r in results.items()]
    table(rows, ["VM", "p50 interval (ms)", "p99 interval (ms)", "ticks per minute", "guest clock vs host"])
    ours, peer = results["ours (tcg)"], results["QEMU TCG"]
    print(f"\nours/QEMU: p50 {ours['p50'] / peer['p50']:.2f}x, p99 {ours['p99'] / peer['p99']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
