"""Network throughput and latency over NAT, ours against QEMU's `-nic user,model=e1000` (the same
libslirp), with the Linux test ISO and its e1000 driver in both, in the same run (issue 12).

Figures, each the median of --runs:
- guest download: the guest fetches --mib MiB from an HTTP server on the host's 127.0.0.1 through
  10.0.2.2 (`wget -O /dev/null`), timed on the host from typing the command to its end marker;
- host download through a port forward: the host fetches a --mib MiB file the guest's busybox
  httpd serves from tmpfs, through 127.0.0.1:<port> forwarded to guest port 80;
- ping: the guest pings 10.0.2.2 (20 echoes, 0.2 s apart); p50 of the RTTs it prints.

Both VMs: 512 MiB, the ISO on the CD-ROM, SeaBIOS, tcg. Targets: throughput >= 0.5x QEMU's,
ping p50 <= 2x QEMU's.

`python bench/net_throughput.py [--mib 100] [--runs 3]`
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import header, median, table  # noqa: E402

from services.demo.linux_iso import linux_iso  # noqa: E402
from services.ipc.network import NetAdapter, PortForward  # noqa: E402
from tests.support.guest_vms import OurVm, QemuVm  # noqa: E402
from tests.waiting import free_port  # noqa: E402

BOOT_TIMEOUT = 300


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Guest:
    """Shell commands on a VM's serial console, timed on the host."""

    def __init__(self, vm):
        self.vm, self.count = vm, 0

    def run(self, command: str, timeout: float = 300) -> tuple[str, float]:
        self.count += 1
        marker = f"@@{self.count}@@"
        start = time.monotonic()
        mark = self.vm.type(f"{command}; echo @@$((0+{self.count}))@@\r")
        end = self.vm.serial.wait(marker.encode(), timeout, after=mark + len(command) + 8, alive=self.vm.alive)
        return self.vm.serial.text(mark)[:end - mark], time.monotonic() - start


def measure(vm, forward_port: int, web_port: int, mib: int, runs: int) -> dict:
    guest = Guest(vm)
    vm.serial.wait(b"GUEST-READY", BOOT_TIMEOUT, alive=vm.alive)
    vm.serial.wait(b"guest# ", 60, alive=vm.alive)
    out, _ = guest.run("ip link set eth0 up; sleep 3; udhcpc -i eth0 -n -q -t 10 -T 1", 120)
    assert "DHCP-LEASE eth0 10.0.2.15" in out or "lease of 10.0.2.15" in out, out
    guest.run(f"mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count={mib} 2>/dev/null"
              " && httpd -h /www -p 80", 120)
    down, up, pings = [], [], []
    for _ in range(runs):
        out, seconds = guest.run(f"wget -q -O /dev/null http://10.0.2.2:{web_port}/big && echo FETCHED", 600)
        assert "FETCHED" in out, out
        down.append(mib / seconds)
        start = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{forward_port}/big", timeout=600) as response:
            size = 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
        assert size == mib << 20, size
        up.append(mib / (time.monotonic() - start))
        out, _ = guest.run("ping -c 20 -i 0.2 10.0.2.2", 120)
        pings += [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]
    return {"download": median(down), "forward": median(up), "ping": median(pings)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    header("net_throughput: NAT over e1000, ours vs QEMU TCG (-nic user,model=e1000)")
    iso = str(linux_iso())
    folder = tempfile.mkdtemp(prefix="hb-bench-net-")
    with open(os.path.join(folder, "big"), "wb") as f:
        f.write(b"\0" * (args.mib << 20))
    web_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", web_port), functools.partial(Quiet, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    results = {}
    for name in ("qemu", "ours"):
        forward_port = free_port()
        if name == "qemu":
            vm = QemuVm(["-cdrom", iso, "-boot", "d", "-nic",
                         f"user,model=e1000,mac=08:00:27:a1:b2:c3,hostfwd=tcp:127.0.0.1:{forward_port}-:80"])
        else:
            nic = NetAdapter(0, "82540EM", "080027A1B2C3",
                             forwards=(PortForward.parse(f"web,tcp,127.0.0.1,{forward_port},,80"),))
            vm = OurVm(iso=iso, nics=[nic])
        vm.start()
        try:
            results[name] = measure(vm, forward_port, web_port, args.mib, args.runs)
        finally:
            vm.stop()
    server.shutdown()
    ours, qemu = results["ours"], results["qemu"]
    table([["guest download over NAT (MiB/s)", f"{ours['download']:.1f}", f"{qemu['download']:.1f}",
            f"{ours['download'] / qemu['download']:.2f}x", ">= 0.5x"],
           ["host download via port forward (MiB/s)", f"{ours['forward']:.1f}", f"{qemu['forward']:.1f}",
            f"{ours['forward'] / qemu['forward']:.2f}x", ">= 0.5x"],
           ["ping 10.0.2.2 p50 (ms)", f"{ours['ping']:.2f}", f"{qemu['ping']:.2f}",
            f"{ours['ping'] / qemu['ping']:.2f}x", "<= 2x"]],
          ["figure", "ours", "QEMU", "ratio", "target"])


if __name__ == "__main__":
    main()
