"""Soak of one VM's RDP server under attack (issue 11): for --minutes (10 by default), at once,

- fuzzers send mutated PDUs at every connection phase (tests/support/rdp_fuzz.py), from 127.0.0.2;
- an idle flood opens 300 connections every 30 s and holds them 20 s, from 127.0.0.3;
- a guesser tries wrong passwords for the real user, from 127.0.0.4 (it is locked out quickly);
- a real user logs on with the right password again and again, from 127.0.0.1.

The VM is the built-in demo guest (services.headless.VmProcesses) with VBoxAuthSimple. Reported:
connections served, the real user's logon time (p50, p99), the RDP server's CPU, its crashes
(restarts, tracebacks) and wrong logons (a wrong password admitted or the real user refused).
Loopback addresses only. Not part of the test suite.

    python bench/vrdp_soak.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import header, machine, percentile, table  # noqa: E402

from services.demo.linux_iso import linux_iso  # noqa: E402
from services.headless import VmProcesses  # noqa: E402
from services.ipc.spec import Drive, LaunchSpec  # noqa: E402
from services.ipc.vrde import VrdeConfig  # noqa: E402
from services.vrdp import x224  # noqa: E402
from services.vrdp.auth.simple import password_hash  # noqa: E402
from services.vrdp.tpkt import build_tpkt  # noqa: E402
from tests.support.rdp_fuzz import mutations  # noqa: E402
from tests.support.rdp_test_client import Closed, RdpClient  # noqa: E402
from tests.support.rdp_vectors import XFREERDP_CONNECT_INITIAL  # noqa: E402
from tests.waiting import free_port  # noqa: E402

USER, PASSWORD = "soak", "s0ak-Pa55"
# An RDP 5 client's X.224 Connection Request (no negotiation: Standard RDP Security follows).
X224_REQUEST = build_tpkt(x224.build_connection_request(x224.ConnectionRequest("soak")))


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values: dict[str, int] = {}
        self.logon_seconds: list[float] = []

    def add(self, name: str, count: int = 1) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0) + count


def fuzzer(port: int, stop: threading.Event, counters: Counters, seed: int) -> None:
    seeds = [X224_REQUEST, XFREERDP_CONNECT_INITIAL]
    for data in mutations(seeds, 10**9, seed=seed):
        if stop.is_set():
            return
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)) as sock:
                if random.random() < 0.5:
                    sock.sendall(X224_REQUEST)
                    sock.recv(4096)
                sock.sendall(data)
                sock.settimeout(0.5)
                try:
                    sock.recv(4096)
                except OSError:
                    pass
            counters.add("fuzzed connections")
        except OSError:
            counters.add("fuzz connections refused")


def idle_flood(port: int, stop: threading.Event, counters: Counters) -> None:
    while not stop.is_set():
        held = []
        for _ in range(300):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5,
                                                     source_address=("127.0.0.3", 0)))
            except OSError:
                counters.add("idle connections refused")
        counters.add("idle connections", len(held))
        stop.wait(20)
        for sock in held:
            sock.close()
        stop.wait(10)


def guesser(port: int, stop: threading.Event, counters: Counters) -> None:
    while not stop.is_set():
        client = None
        try:
            client = RdpClient(port, user=USER, password=f"guess-{random.random()}", source="127.0.0.4")
            client.logon()
            counters.add("WRONG PASSWORD ADMITTED")
        except (Closed, OSError, TimeoutError):
            counters.add("guesses refused")
        finally:
            if client is not None:
                client.close()


def real_user(port: int, stop: threading.Event, counters: Counters) -> None:
    while not stop.is_set():
        started = time.monotonic()
        client = None
        try:
            client = RdpClient(port, user=USER, password=PASSWORD)
            client.logon()
            counters.logon_seconds.append(time.monotonic() - started)
            counters.add("real logons")
        except (Closed, OSError, TimeoutError) as error:
            counters.add("REAL USER REFUSED")
            print(f"the real user was refused: {type(error).__name__}: {error}", file=sys.stderr)
        finally:
            if client is not None:
                client.close()
        stop.wait(1)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fuzzers", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hb-soak-"))
    os.environ["XDG_RUNTIME_DIR"] = str(folder)
    port = free_port()
    vrde = VrdeConfig.listening(port, "soak", auth_type="external", auth_library="VBoxAuthSimple",
                                users={USER: password_hash(PASSWORD)}, state_dir=str(folder / "state"))
    spec = LaunchSpec("soak", memory_mib=128, accel="tcg", drives=[Drive(1, 0, "dvd", str(linux_iso()))],
                      vrde=vrde)
    vm = VmProcesses(spec)
    vm.start()
    stop = threading.Event()
    counters = Counters()
    crashes = 0
    try:
        time.sleep(3)
        vrdp_pid = vm.vrdp.pid
        cpu_before, started = cpu_seconds(vrdp_pid), time.monotonic()
        workers = [threading.Thread(target=fuzzer, args=(port, stop, counters, n), daemon=True)
                   for n in range(args.fuzzers)]
        workers += [threading.Thread(target=target, args=(port, stop, counters), daemon=True)
                    for target in (idle_flood, guesser, real_user)]
        for worker in workers:
            worker.start()
        deadline = started + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(1)
            if vm.vrdp.pid != vrdp_pid or vm.vrdp.poll() is not None or vm.vcpu.poll() is not None:
                crashes += 1
                print("the RDP server or the VM ended", file=sys.stderr)
                break
        cpu = (cpu_seconds(vrdp_pid) - cpu_before) / (time.monotonic() - started)
        stop.set()
        for worker in workers:
            worker.join(30)
    finally:
        vm.power_off()
    logs = "".join(path.read_text(errors="replace") for path in folder.rglob("*.log"))
    crashes += logs.count("Traceback")
    header(f"RDP server soak, {args.minutes:g} min")
    print(machine())
    times = counters.logon_seconds
    rows = [[name, str(value)] for name, value in sorted(counters.values.items())]
    rows += [["real user's logon p50 / p99 (s)",
              f"{percentile(times, 50):.2f} / {percentile(times, 99):.2f}" if times else "-"],
             ["RDP server CPU (share of a core)", f"{cpu:.1%}"],
             ["crashes (restarts, tracebacks)", str(crashes)]]
    table(rows, ["figure", "value"])
    wrong = counters.values.get("WRONG PASSWORD ADMITTED", 0) + counters.values.get("REAL USER REFUSED", 0)
    print(f"wrong logons: {wrong}")
    return 1 if crashes or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
