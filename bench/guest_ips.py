"""Guest instructions per second: our tcg accelerator against QEMU TCG, same program, same run.

Workloads (64-bit long mode, bench/programs/):
  alu   ips_alu.asm: add/xor/rol/add/dec/jnz on registers, 6 instructions per iteration
  mem   ips_mem.asm: load/load/store/store/add/add/dec/jnz over a 64 KiB buffer
  rep   ips_mem.asm: `rep movsq` of the same 64 KiB buffer (reported in bytes per second)
  mem/rep "TLB-aliased": the same with the destination 1 MiB after the source, so that source and
        destination pages collide in the direct-mapped softmmu TLB of both engines
Timing: the program writes a debug-port byte before and after the loop; the host timestamps both
(our runner's ProgramResult.times; QEMU's isa-debugcon through a unix socket, bench/_harness.py).
Each engine gets its own iteration count (the only difference between the images, an assembler
define) so that every timed loop runs ~TARGET seconds; RUNS runs each, median reported.
--kvm adds our kvm accelerator with tiny counts (on this host /dev/kvm is PVM and emulates
non-PVM guests at ~1-2 M instructions/s, research/peers.md §0).

    cd /work/main && python bench/guest_ips.py [--runs 3] [--target 1.5] [--kvm]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

BUF = 65536
ALIAS_DST = 0x500000      # source page n and destination page n + 256 share a TLB slot


def alu_insns(d):
    return 6 * d["ITERS"]


def mem_insns(d):
    return d["PASSES"] * (8 * (BUF // 16) + 5)


def rep_bytes(d):
    return d["REP_PASSES"] * BUF


def runner(engine):
    if engine == "qemu":
        return lambda img: h.run_qemu(img, timeout=60)
    return lambda img: h.run_ours(engine, img, timeout=60)


def measure_alu(engine, iters):
    d = {"ITERS": iters}
    r = runner(engine)(h.build("ips_alu", d))
    h.check(r, f"ips_alu on {engine}")
    return alu_insns(d), h.span(r, "S", "E")


def measure_mem(engine, passes, rep_passes, dst=0x423000):
    d = {"PASSES": passes, "REP_PASSES": rep_passes, "BUF": BUF, "DST": dst}
    r = runner(engine)(h.build("ips_mem", d))
    h.check(r, f"ips_mem on {engine}")
    return (mem_insns(d), h.span(r, "S", "E")), (rep_bytes(d), h.span(r, "R", "Q"))


def calibrate(engine, target, start, kvm=False, dst=0x423000):
    """Counts (alu iters, mem passes, rep passes) that make each timed loop last ~target s."""
    floor = 0.02 if kvm else 0.15
    it, p, rp = start
    while True:
        n, t = measure_alu(engine, it)
        if t >= floor or it >= 1 << 40:
            break
        it *= 8
    it = max(1, int(it * target / t))
    while True:
        (n, t), (nb, tb) = measure_mem(engine, p, rp, dst)
        if (t >= floor and tb >= floor) or p >= 1 << 30:
            break
        if t < floor:
            p *= 8
        if tb < floor:
            rp *= 8
    return it, max(1, int(p * target / t)), max(1, int(rp * target / tb))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--target", type=float, default=1.5, help="seconds per timed loop (default 1.5)")
    ap.add_argument("--kvm", action="store_true", help="also our kvm accelerator, tiny counts")
    args = ap.parse_args()

    h.header("guest_ips: guest instructions per second, 64-bit long mode")
    engines = ["tcg", "qemu"] + (["kvm"] if args.kvm else [])
    results = {}   # engine -> {"alu": [rate], "mem": [rate], "rep": [bytes/s]}, counts
    for engine in engines:
        kvm = engine == "kvm"
        target = 0.3 if kvm else args.target
        counts = calibrate(engine, target, (10_000, 2, 2) if kvm else (1_000_000, 20, 20), kvm)
        it, p, rp = counts
        rates = {"alu": [], "mem": [], "rep": [], "mem_alias": [], "rep_alias": []}
        if not kvm:
            _, pa, rpa = calibrate(engine, target, (1, 20, 20), kvm, dst=ALIAS_DST)
        for _ in range(args.runs):
            n, t = measure_alu(engine, it)
            rates["alu"].append(n / t)
            (n, t), (nb, tb) = measure_mem(engine, p, rp)
            rates["mem"].append(n / t)
            rates["rep"].append(nb / tb)
            if not kvm:
                (n, t), (nb, tb) = measure_mem(engine, pa, rpa, ALIAS_DST)
                rates["mem_alias"].append(n / t)
                rates["rep_alias"].append(nb / tb)
        results[engine] = rates
        print(f"# {engine}: ITERS={it} PASSES={p} REP_PASSES={rp} (BUF={BUF})"
              + ("" if kvm else f", aliased PASSES={pa} REP_PASSES={rpa}") + "; "
              + ", ".join(f"{k}: " + " ".join(f"{x / 1e6:.1f}" for x in v) for k, v in rates.items() if v)
              + " (M/s, each run)")

    print()
    rows = []
    units = {"alu": ("M guest insn/s", 1e6), "mem": ("M guest insn/s", 1e6), "rep": ("MB/s copied", 1e6),
             "mem_alias": ("M guest insn/s", 1e6), "rep_alias": ("MB/s copied", 1e6)}
    names = {"alu": "ALU loop (add/xor/rol/add/dec/jnz)",
             "mem": "copy loop (2 ld + 2 st of 8 B, 8 insn)",
             "rep": "rep movsq 64 KiB",
             "mem_alias": "copy loop, TLB-aliased buffers",
             "rep_alias": "rep movsq, TLB-aliased buffers"}
    for w in ("alu", "mem", "rep", "mem_alias", "rep_alias"):
        unit, scale = units[w]
        ours = h.median(results["tcg"][w])
        peer = h.median(results["qemu"][w])
        row = [names[w], unit, f"{ours / scale:,.1f}", f"{peer / scale:,.1f}", f"{ours / peer:.3f}",
               f"{peer / ours:.1f}x"]
        if args.kvm:
            row.append(f"{h.median(results['kvm'][w]) / scale:,.2f}" if results["kvm"][w] else "")
        rows.append(row)
    head = ["workload", "unit", "ours (tcg)", "peer (QEMU TCG)", "ours/peer", "peer faster by"]
    if args.kvm:
        head.append("ours (kvm, PVM-emulated)")
    h.table(rows, head)
    print(f"\n(median of {args.runs} runs; rate = work between the two debug-port marks / host time between them)")


if __name__ == "__main__":
    main()
