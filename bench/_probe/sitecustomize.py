"""Benchmark-only instrumentation of our VM's processes (bench/boot_time.py --profile).

Python imports this file at start-up when bench/_probe is on PYTHONPATH. It does nothing unless
HB_BENCH_PROBE names a directory. Then it wraps, at class level and before any instance exists,
the tcg engine's hooks and the io channel's calls with counters and perf_counter_ns timers. It adds
nothing to the VMM's sources. Once a TcgEngine (the vCPU process) or an IoServer (the device
process) is created, a thread appends the counters to HB_BENCH_PROBE/<role>.jsonl every 50 ms,
as {"t": time.monotonic(), "c": {name: [calls, ns]}}. The benchmark takes differences at the
phase boundaries.

Categories in the vCPU process (ns are wall time, nested where said):
- jit            uc.emu_start: guest code in the JIT *and* every hook below called from it
- in:PORT, out:PORT   the IN/OUT hooks, per port (the io-channel read time is nested inside)
- mmio-bus       Bus.mmio_read/mmio_write called from the JIT's MMIO windows (VGA, PCI BARs, ...)
- lapic, ioapic  the local APIC and IO-APIC MMIO hooks
- interrupt      the INT hook: software INT n, exceptions, HLT/MSR intercepts (delivery nested)
- syscall, invalid
- deliver:SOURCE Delivery of an interrupt/exception (from the run loop or nested in a hook)
- idle           HLT: sleeping until an interrupt
- purge          dropping JIT code that DMA overwrote
- rt:KIND        io-channel round trips (RemoteBus._read): pio-read, pio-read-string, mmio-read
- post           posted writes (RemoteBus._post)
- irq-in         interrupt-line messages from the device process (engine.set_irq, other thread)
Device process: serve (IoServer.serve, one frame), dev-in/out:PORT (the device bus).
"""

import os

_DIR = os.environ.get("HB_BENCH_PROBE")


def _install():
    import functools
    import json
    import threading
    import time

    counters = {}
    pc = time.perf_counter_ns

    def wrap(cls, name, key):
        original = getattr(cls, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            k = key(args) if callable(key) else key
            t = pc()
            try:
                return original(*args, **kwargs)
            finally:
                c = counters.get(k)
                if c is None:
                    counters[k] = c = [0, 0]
                c[0] += 1
                c[1] += pc() - t
        setattr(cls, name, wrapper)

    def dumper(role):
        path = os.path.join(_DIR, f"{role}.jsonl")

        def loop():
            with open(path, "a") as f:
                while True:
                    snap = {k: list(v) for k, v in list(counters.items())}
                    f.write(json.dumps({"t": time.monotonic(), "c": snap}) + "\n")
                    f.flush()
                    time.sleep(0.05)
        threading.Thread(target=loop, name="bench-probe", daemon=True).start()

    from services.ipc import io as ipc_io
    from services.ipc.messages import Io

    read_kind = {Io.PIO_READ: "pio-read", Io.PIO_READ_STRING: "pio-read-string", Io.MMIO_READ: "mmio-read"}
    wrap(ipc_io.RemoteBus, "_read", lambda a: "rt:" + read_kind.get(a[1], str(a[1])))
    wrap(ipc_io.RemoteBus, "_post", "post")
    wrap(ipc_io.IoServer, "serve", "serve")
    server_init = ipc_io.IoServer.__init__

    def io_server_init(self, *args, **kwargs):
        server_init(self, *args, **kwargs)
        dumper("devices")
        bus_cls = type(self.bus)
        if not getattr(bus_cls, "_bench_probe", False):
            bus_cls._bench_probe = True
            wrap(bus_cls, "pio_read", lambda a: f"dev-in:{a[1]:#x}")
            wrap(bus_cls, "pio_write", lambda a: f"dev-out:{a[1]:#x}")
            wrap(bus_cls, "pio_read_string", lambda a: f"dev-ins:{a[1]:#x}")
    ipc_io.IoServer.__init__ = io_server_init

    import unicorn

    from services.hw.bus import Bus
    from services.vcpu.tcg import engine as tcg

    wrap(unicorn.Uc, "emu_start", "jit")
    E = tcg.TcgEngine
    wrap(E, "_on_in", lambda a: f"in:{a[2]:#x}")
    wrap(E, "_on_out", lambda a: f"out:{a[2]:#x}")
    for name, key in (("_lapic_read", "lapic"), ("_lapic_write", "lapic"), ("_ioapic_read", "ioapic"),
                      ("_ioapic_write", "ioapic"), ("_on_interrupt", "interrupt"),
                      ("_on_syscall", "syscall"), ("_on_sysenter", "syscall"), ("_on_invalid", "invalid"),
                      ("_idle", "idle"), ("_purge_dma_writes", "purge"), ("set_irq", "irq-in")):
        wrap(E, name, key)
    wrap(E, "_deliver", lambda a: f"deliver:{a[2]}")
    engine_init = E.__init__

    def tcg_init(self, *args, **kwargs):
        engine_init(self, *args, **kwargs)
        # The JIT's MMIO windows call self.bus.mmio_read/-write; the engine's bus is a Bus.
        bus = self.bus
        for name in ("mmio_read", "mmio_write"):
            original = getattr(bus, name)

            def hooked(*a, _original=original, **kw):
                t = pc()
                try:
                    return _original(*a, **kw)
                finally:
                    c = counters.setdefault("mmio-bus", [0, 0])
                    c[0] += 1
                    c[1] += pc() - t
            setattr(bus, name, hooked)
        dumper("vcpu")
    E.__init__ = tcg_init
    assert Bus


if _DIR:
    try:
        _install()
    except Exception as error:    # never break the VM for a benchmark probe
        import sys
        print(f"bench probe not installed: {error!r}", file=sys.stderr)
