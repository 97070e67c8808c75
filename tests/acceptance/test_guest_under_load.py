"""Acceptance (issues 19 and 21): the Linux test guest on the software accelerator gives every process
its turn while others keep the processor busy, in user mode and in the kernel, with xfreerdp
watching its screen; and a system-call-, disk- and interrupt-heavy workload checks its own results
for minutes on a loaded host, with QEMU TCG running the same workload beside it as the reference.

The guest's /bin/guest-ticks prints "TICK <n> <uptime>" once a second on serial: the number of
lines in a minute of host time shows whether a sleeping process gets the processor back, and the
uptime they carry whether the guest's clock keeps time. One boot serves the module."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from services.demo.linux_iso import linux_iso
from tests.support.guest_vms import QemuVm
from tests.support.rdp_clients import (
    Client,
    Display,
    assert_screen_matches,
    boot_guest,
    require,
    stop,
    wait_for,
)

WINDOW = 60.0           # seconds of host time per tick measurement
MIN_TICKS = 54          # of the 60 a process sleeping 1 s at a time must print in the window
SOAK_SECONDS = 120      # the workload's duration in the default run (--run-slow: SLOW_SOAK_SECONDS)
SLOW_SOAK_SECONDS = 1800
TICK = re.compile(r"TICK (\d+) (\d+\.\d+)")


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    require("Xvfb", "xdotool", "import", "xfreerdp")
    yield from boot_guest(tmp_path_factory.mktemp("guest-under-load"), {"Security/Method": "TLS"})


@pytest.fixture(scope="module")
def ticks(guest):
    mark = guest.type_serial("guest-ticks &\n")
    guest.wait_serial("TICK 1 ", 60, after=mark)
    return TickWatch(guest)


@pytest.fixture(scope="module")
def watcher(guest, tmp_path_factory):
    """xfreerdp showing the guest screen for the rest of the module."""
    tmp = tmp_path_factory.mktemp("guest-under-load-x")
    display = Display(tmp)
    client = Client(display, ["xfreerdp", f"/v:127.0.0.1:{guest.port}", "/cert:ignore", "/u:watcher",
                              "/p:x", "/sec:tls", "/bpp:32", "/size:720x400", "-clipboard"],
                    tmp / "xfreerdp.log", "FreeRDP")
    client.wait_window([guest.vrdp])
    yield client
    client.close()
    display.close()


class TickWatch:
    """The TICK lines of guest-ticks, each with the host time at which it arrived."""

    def __init__(self, guest):
        self.guest = guest

    def collect(self, seconds: float) -> list[tuple[float, int, float]]:
        """(host time, n, guest uptime) of every TICK line that arrives in the next `seconds`."""
        seen = len(self.guest.serial())
        lines, buffer = [], ""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            text = self.guest.serial()
            buffer += text[seen:]
            seen = len(text)
            now = time.monotonic()
            while "\n" in buffer:
                line, buffer = buffer.split("\n", 1)
                match = TICK.search(line)
                if match:
                    lines.append((now, int(match.group(1)), float(match.group(2))))
            time.sleep(0.05)
        return lines

    def assert_on_time(self, seconds: float, what: str) -> list[tuple[float, int, float]]:
        """At least MIN_TICKS/WINDOW of the ticks arrive, and the guest's clock advances with the
        host's within a second (issue 19's acceptance; uptime rather than `date +%s`: the same
        clock, read with 10 ms instead of 1 s resolution)."""
        lines = self.collect(seconds)
        assert len(lines) >= MIN_TICKS * seconds / WINDOW, (
            f"{what}: {len(lines)} ticks in {seconds:.0f} s; the serial log ends with:\n"
            + self.guest.serial()[-800:])
        host = lines[-1][0] - lines[0][0]
        uptime = lines[-1][2] - lines[0][2]
        assert abs(uptime - host) <= 1.0, (
            f"{what}: the guest's clock advanced {uptime:.2f} s in {host:.2f} s of host time")
        return lines


def busy(guest, command: str) -> str:
    """Starts `command` in the background on the serial shell; returns its process id."""
    mark = guest.type_serial(f"{command} & echo BUSY-PID=$!\n")
    pos = guest.wait_serial("BUSY-PID=", 30, after=mark + len(command) + 20)
    return re.match(r"BUSY-PID=(\d+)", guest.serial()[pos:]).group(1)


def test_a_user_mode_busy_loop_leaves_the_other_processes_their_turn(guest, ticks):
    loop = busy(guest, "while :; do :; done")
    hog = busy(guest, f"timeout {WINDOW + 15:.0f} md5sum /dev/zero")
    try:
        ticks.assert_on_time(WINDOW, "two busy loops in user mode")
    finally:
        guest.type_serial(f"kill {loop} {hog}\n")


def test_a_kernel_busy_loop_with_an_rdp_client_watching(guest, ticks, watcher, tmp_path):
    # Typed at the screen's shell through the client, as a user would: the kernel fills buffers
    # from the random generator as fast as it can, and a second ticker writes to the screen.
    watcher.type_line(f"guest-ticks /dev/tty1 & timeout {WINDOW + 15:.0f} dd if=/dev/urandom "
                      "of=/dev/null bs=1M")
    try:
        wait_for(lambda: "TICK 2 " in "\n".join(guest.screen_text()), 60, "ticks on the screen",
                 [watcher.process])
        ticks.assert_on_time(WINDOW, "reading /dev/urandom in the kernel")
        assert_screen_matches(watcher, guest, 32, tmp_path)
    finally:
        guest.type_serial("pkill -f 'guest-ticks /dev/tty1'; pkill -f 'dd if=/dev/urandom'\n")


def soak(guest, ticks, seconds: float) -> None:
    """guest-soak on our VM and on QEMU TCG at once, with a third busy process on the host: all
    three compete for this machine's cores, as on a loaded server."""
    qemu = QemuVm(["-cdrom", str(linux_iso()), "-boot", "d"], memory_mib=256)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        qemu.start()
        qemu.serial.wait(b"guest# ", 300, alive=qemu.alive)
        restarts = guest.serial().count("built-in shell (ash)")
        command = f"guest-soak {seconds:.0f}\n"
        qemu_mark = qemu.type(command)
        mark = guest.type_serial(command)
        lines = ticks.collect(seconds)
        qemu.serial.wait(b"SOAK-DONE", seconds + 300, after=qemu_mark, alive=qemu.alive)
        done = guest.wait_serial("SOAK-DONE", 300, after=mark)
    finally:
        stop(hog)
        qemu.stop()
    ours = guest.serial()[mark:]
    reference = qemu.serial.text(qemu_mark)
    for who, text in (("ours", ours), ("QEMU", reference)):
        errors = [line for line in text.splitlines() if line.startswith("SOAK-ERR")]
        assert not errors, f"{who}: the guest found wrong results:\n" + "\n".join(errors[:20])
    assert guest.serial().count("built-in shell (ash)") == restarts, "the guest's serial shell died"
    ours_rounds = int(re.search(r"SOAK-DONE rounds=(\d+) errors=0", guest.serial()[done:]).group(1))
    qemu_rounds = int(re.search(r"SOAK-DONE rounds=(\d+) errors=0", reference).group(1))
    print(f"\nguest-soak {seconds:.0f} s on a loaded host: {ours_rounds} rounds on tcg, "
          f"{qemu_rounds} on QEMU TCG; {len(lines)} ticks")
    assert ours_rounds >= 5, f"only {ours_rounds} rounds of the workload in {seconds:.0f} s"


def test_a_system_call_and_interrupt_heavy_workload_checks_out_on_a_loaded_host(guest, ticks, watcher):
    soak(guest, ticks, SOAK_SECONDS)


@pytest.mark.slow
def test_half_an_hour_of_the_workload_keeps_results_and_time(guest, ticks, watcher):
    """--run-slow: 30 minutes, zero errors, the guest's clock within 1 % of the host's."""
    mark = guest.type_serial(f"guest-soak {SLOW_SOAK_SECONDS}\n")
    lines = ticks.collect(SLOW_SOAK_SECONDS)
    guest.wait_serial("SOAK-DONE", 600, after=mark)
    errors = [line for line in guest.serial()[mark:].splitlines() if line.startswith("SOAK-ERR")]
    assert not errors, "\n".join(errors[:20])
    host = lines[-1][0] - lines[0][0]
    uptime = lines[-1][2] - lines[0][2]
    assert len(lines) >= MIN_TICKS / WINDOW * host, f"{len(lines)} ticks in {host:.0f} s"
    assert abs(uptime - host) <= 0.01 * host, f"guest clock {uptime:.1f} s in {host:.1f} s of host time"
