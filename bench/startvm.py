"""Time from `startvm` to a running VM through the manager, and process start to first instruction.

1. startvm: a VM with no media (SeaBIOS only), 64 MiB, through the manager's control socket: the
   request, until its job is done (vCPU and device processes answer `status` under supervisor, the RDP
   server reports its port). Cold = the first start of a fresh home (the manager starts supervisord);
   warm = later starts (poweroff in between). Also the `ping` round trip of a fresh CLI-like process.
2. First instruction: a 64 KiB firmware whose reset vector writes the exit port (0xF4): process exec
   until exit, for `python -m services.vcpu --exit-port 0xf4` and for QEMU
   (`qemu-system-x86_64 -bios ... -device isa-debug-exit`), each with tcg and kvm when /dev/kvm opens.
   Both include process teardown; no peer is needed.

`python bench/startvm.py [--runs 5]`
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench._harness import machine
from services.ipc.spec import LaunchSpec
from services.manager.client import connect_or_start, daemon_running
from tests.support.vm_processes import process_argv_for

RESET_VECTOR = 0xFFF0


def exit_firmware() -> bytes:
    """64 KiB; at the reset vector: mov al, 0; out 0xF4, al (isa-debug-exit); hlt."""
    image = bytearray(b"\xf4" * 0x10000)
    image[RESET_VECTOR:RESET_VECTOR + 5] = b"\xb0\x00\xe6\xf4\xf4"
    return bytes(image)


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:7.1f} ms (min {min(samples) * 1000:.1f}, n={len(samples)})"


def bench_startvm(runs: int, accel: str) -> None:
    home = tempfile.mkdtemp(prefix="hb-bench-")
    run = tempfile.mkdtemp(prefix="hb-run-")
    os.environ.update(VBOX_USER_HOME=home, XDG_RUNTIME_DIR=run, HEADBOX_IDLE_EXIT="600")
    client = connect_or_start(home)
    try:
        client.request("createvm", name="b", register=True)
        client.request("modifyvm", vm="b", changes={"memory": 64, "accel": accel})
        times = []
        for _ in range(runs + 1):
            started = time.perf_counter()
            client.wait_job(client.request("startvm", vm="b", type="headless")["job"], poll_s=0.005)
            times.append(time.perf_counter() - started)
            assert client.request("vmstate", vm="b")["state"] == "Running"
            client.request("controlvm", vm="b", action="poweroff")
        print(f"startvm -> running, {accel}, cold (starts supervisord): {times[0] * 1000:7.1f} ms")
        print(f"startvm -> running, {accel}, warm:                       {median_ms(times[1:])}")
        pings = []
        for _ in range(runs):
            started = time.perf_counter()
            code = "from services.manager.client import ManagerClient; ManagerClient().request('ping')"
            subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
            pings.append(time.perf_counter() - started)
        print(f"a new process: import client + ping:                 {median_ms(pings)}")
    finally:
        client.request("shutdown")
        client.close()
        deadline = time.monotonic() + 20
        while daemon_running(home) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)


def timed(argv: list[str], env=None) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=60, check=False)
    return time.perf_counter() - started, done.returncode


def bench_first_instruction(runs: int, accels: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="hb-fw-") as tmp:
        firmware = os.path.join(tmp, "exit.bin")
        with open(firmware, "wb") as file:
            file.write(exit_firmware())
        env = {**os.environ, "XDG_RUNTIME_DIR": tmp}
        qemu = shutil.which("qemu-system-x86_64")
        for accel in accels:
            ours, theirs = [], []
            for index in range(runs):
                spec = LaunchSpec(f"fw{index}", memory_mib=64, accel=accel, firmware=firmware, exit_port=0xF4,
                                  device_process=False)
                seconds, code = timed(process_argv_for("vcpu", spec, tmp), env)
                ours.append(seconds)
                if qemu:
                    seconds, qcode = timed([qemu, "-accel", accel, "-M", "pc", "-m", "64", "-bios", firmware,
                                            "-display", "none", "-nodefaults", "-no-reboot",
                                            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x01"])
                    assert qcode == 1, f"QEMU exited with {qcode}"    # (0 << 1) | 1
                    theirs.append(seconds)
            print(f"exec -> first instruction -> exit, ours {accel}:  {median_ms(ours)}  (exit code {code})")
            if theirs:
                print(f"exec -> first instruction -> exit, QEMU {accel}:  {median_ms(theirs)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    accels = ["tcg", "kvm"] if kvm else ["tcg"]
    for accel in accels:
        bench_startvm(args.runs, accel)
    bench_first_instruction(args.runs, accels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
