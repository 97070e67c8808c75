"""The cost of one interrupt delivery: our tcg accelerator against QEMU TCG, same program, same run.

1. Software interrupts (bench/programs/int_cost.asm): N x `int 0x30` whose handler is only
   iret/iretd/iretq, minus the same loop without the int; in 64-bit long mode, 32-bit protected
   mode and real mode. Reported: µs per delivery + return (median of RUNS runs).
2. External interrupts (bench/programs/timer_cost.asm): the LAPIC timer, periodic at --timer-hz,
   interrupting an ALU loop in long mode (handler: count, EOI, iretq). Reported: ticks delivered
   per second and the host time each costs the guest ((loop with timer - loop without) / ticks),
   at --timer-hz (1000, like Linux HZ=1000) and --fast-hz (20000, where QEMU's cost is resolvable).
   Our runs get a watchdog (--watchdog s): a run that does not finish is reported as a livelock
   (see bench/RESULTS.md: an EOI written while another interrupt is pending is re-executed forever).

Each engine gets its own N (the only difference between the images, an assembler define) so that
every timed loop runs ~TARGET seconds.

    cd /work/main && python bench/interrupt_cost.py [--runs 3] [--target 1.2] [--timer-hz 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

MODES = [(64, "long mode, int 0x30 / iretq"), (32, "protected mode, int 0x30 / iretd"),
         (16, "real mode, int 0x30 / iret")]


def run(engine, image, timeout=60.0):
    if engine == "qemu":
        return h.run_qemu(image, timeout=timeout)
    return h.run_ours(engine, image, timeout=timeout)


def int_cost(engine, mode, n):
    r = run(engine, h.build("int_cost", {"MODE": mode, "N": n}))
    h.check(r, f"int_cost MODE={mode} on {engine}")
    with_int, without = h.span(r, "A", "B"), h.span(r, "B", "C")
    return (with_int - without) / n, with_int


def calibrate_int(engine, mode, target):
    n = 2000
    while True:
        per, t = int_cost(engine, mode, n)
        if t >= 0.15:
            return max(1000, int(n * target / t))
        n *= 8


def spans(r, a, b):
    """Sum of the intervals between every byte a and the byte b that follows it."""
    total, out = 0.0, r.text
    for i, ch in enumerate(out):
        if ch == a:
            total += r.times[out.index(b, i)] - r.times[i]
    return total


def timer_run(engine, iters, apic_count, watchdog, reps=4):
    r = run(engine, h.build("timer_cost", {"ITERS": iters, "APIC_COUNT": apic_count, "REPS": reps}),
            timeout=watchdog if engine != "qemu" else 60)
    if r.exit_code != 0:
        return None, r
    base, timed = spans(r, "a", "b"), spans(r, "c", "d")
    ticks = int(re.search(r"T(\d+)", r.text).group(1))
    return (ticks, base, timed), r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--target", type=float, default=1.2, help="seconds per timed loop")
    ap.add_argument("--timer-hz", type=int, default=1000, help="LAPIC timer rate (default 1000)")
    ap.add_argument("--fast-hz", type=int, default=20000, help="second, faster LAPIC timer rate")
    ap.add_argument("--timer-runs", type=int, default=3)
    ap.add_argument("--watchdog", type=float, default=8.0, help="seconds before our timer run counts as hung")
    ap.add_argument("--no-timer", action="store_true")
    args = ap.parse_args()

    h.header("interrupt_cost: one interrupt delivery (tcg vs QEMU TCG)")
    rows = []
    for mode, name in MODES:
        res = {}
        for engine in ("tcg", "qemu"):
            n = calibrate_int(engine, mode, args.target)
            costs = [int_cost(engine, mode, n)[0] for _ in range(args.runs)]
            res[engine] = h.median(costs)
            print(f"# MODE={mode} {engine}: N={n}, µs/delivery per run: "
                  + " ".join(f"{c * 1e6:.3f}" for c in costs))
        rows.append([name, f"{res['tcg'] * 1e6:.2f}", f"{res['qemu'] * 1e6:.3f}",
                     f"{res['tcg'] / res['qemu']:.0f}x", f"{1 / res['tcg'] / 1e3:.0f} k/s"])
    print()
    h.table(rows, ["software interrupt", "ours µs (tcg)", "peer µs (QEMU TCG)", "ours/peer",
                   "ours deliveries/s"])
    print(f"(median of {args.runs} runs; cost = (loop with int - same loop without) / N)")

    if args.no_timer:
        return
    print()
    trow = []
    plan = [(args.timer_hz, "tcg", args.timer_runs), (args.timer_hz, "qemu", args.timer_runs),
            (args.fast_hz, "qemu", args.timer_runs), (args.fast_hz, "tcg", 1)]
    iters = {}
    for hz, engine, runs in plan:
        apic_count = 1_000_000_000 // hz        # both LAPICs count at 1 GHz with divide 1
        got, hung, attempts = [], 0, 0
        if engine not in iters:
            # Calibrate on the first baseline loop ('a'..'b', timer masked), which completes even
            # when the run later hangs: 4 x 2 loops of ~target/4 s each.
            _, r = timer_run(engine, 40_000_000, 1_000_000_000 // args.timer_hz, args.watchdog, reps=1)
            attempts += 1
            hung += r.exit_code != 0
            iters[engine] = int(40_000_000 * args.target / 4 / h.span(r, "a", "b"))
        for _ in range(runs):
            m, r = timer_run(engine, iters[engine], apic_count, args.watchdog)
            attempts += 1
            if m is None:
                hung += 1
                print(f"# timer {engine} {hz} Hz: no exit within {args.watchdog:.0f} s ({r.stop}), "
                      f"output {r.text[-20:]!r}")
                continue
            got.append(m)
            ticks, base, timed = m
            print(f"# timer {engine} {hz} Hz: ITERS={iters[engine]} x 4 ticks={ticks} "
                  f"loops {base:.3f} s -> {timed:.3f} s with the timer")
        name = {"tcg": "ours (tcg)", "qemu": "peer (QEMU TCG)"}[engine]
        if got:
            rate = h.median([t / timed for t, base, timed in got])
            per = h.median([(timed - base) / t for t, base, timed in got])
            slow = h.median([(timed - base) / base * 100 for t, base, timed in got])
            trow.append([name, f"{hz:,}", f"{rate:,.0f}", f"{per * 1e6:.1f}", f"{slow:.1f} %",
                         f"{hung}/{attempts}"])
        else:
            trow.append([name, f"{hz:,}", "-", "-", "-", f"{hung}/{attempts}"])
    h.table(trow, ["LAPIC timer, long mode", "Hz asked", "ticks/s", "µs per tick", "loop slowdown",
                   "runs hung (incl. calibration)"])
    print("(median over the finished runs; µs per tick = (loops with timer - same loops without) / ticks)")

if __name__ == "__main__":
    main()
