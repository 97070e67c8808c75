"""Acceptance: a running guest is paused mid-loop, its processor, interrupt-controller and platform
state is snapshotted, and a fresh engine in another process restores it over the same RAM region:
the program carries on with exactly the output an uninterrupted run gives, on both accelerators."""

import multiprocessing
import threading
import time
import uuid

import msgpack
import pytest

from services.hw.memory import MiB
from services.ipc.naming import shm_name
from services.ipc.shm import SharedRegion
from services.ipc.spec import LaunchSpec
from services.vcpu.engine import StopReason
from services.vcpu.machine import Machine
from tests.conftest import require_kvm
from tests.guests.build import build_program, counter_expected_lines

RAM_MIB = 16
# KVM here is a software nested hypervisor (~1M instructions/s): give it a smaller buffer.
BUF_DWORDS = {"tcg": 8192, "kvm": 256}


def run_until_lines(machine: Machine, output: bytearray, lines: int, timeout: float) -> None:
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("reason", machine.run()))
    runner.start()
    deadline = time.monotonic() + timeout
    while output.count(b"\n") < lines and time.monotonic() < deadline and runner.is_alive():
        time.sleep(0.005)
    machine.engine.request_stop(StopReason.PAUSED)
    runner.join(20)
    assert result.get("reason") == StopReason.PAUSED, f"the guest stopped on its own: {result}"
    got = output.count(b"\n")
    assert got >= lines, f"only {got} lines in {timeout} s"


def continue_elsewhere(accel, ram_name, image, state_bytes, lines, queue):
    """The second process: a fresh engine over the same RAM, restored from the snapshot."""
    ram = SharedRegion.open(ram_name)
    output = bytearray()
    machine = Machine(LaunchSpec(vm_id="restored", memory_mib=RAM_MIB, accel=accel, exit_port=0xF4),
                      debug_sink=output.extend, ram=ram, firmware=image)
    try:
        machine.restore(msgpack.unpackb(state_bytes, raw=False, strict_map_key=False))
        run_until_lines(machine, output, lines, timeout=120)
        queue.put(bytes(output))
    finally:
        machine.close()
        ram.close()


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_snapshot_restore_in_another_process(accel):
    if accel == "kvm":
        require_kvm()
    image = build_program("counter", {"BUF_DWORDS": BUF_DWORDS[accel]})
    ram_name = shm_name("snap" + uuid.uuid4().hex[:8], "ram")
    ram = SharedRegion.create(ram_name, RAM_MIB * MiB)
    try:
        output = bytearray()
        machine = Machine(LaunchSpec(vm_id="original", memory_mib=RAM_MIB, accel=accel, exit_port=0xF4),
                          debug_sink=output.extend, ram=ram, firmware=image)
        try:
            run_until_lines(machine, output, 8, timeout=120)
            state = machine.snapshot()
        finally:
            machine.close()
        assert state["engine"]["accel"] == accel
        state_bytes = msgpack.packb(state, use_bin_type=True)   # it is plain data

        queue = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=continue_elsewhere, args=(accel, ram_name, image, state_bytes, 8, queue))
        child.start()
        try:
            continued = queue.get(timeout=180)
        finally:
            child.join(30)
        assert child.exitcode == 0
    finally:
        ram.close()
        ram.unlink()

    text = (bytes(output) + continued).decode("latin-1")
    lines = text.split("\n")
    assert lines[0] == "counter start"
    printed = [line for line in lines[1:] if line.startswith("n=")][:-1]   # the last may be cut off
    assert len(printed) >= 14, text
    assert printed == counter_expected_lines(len(printed), BUF_DWORDS[accel]), \
        "the restored guest must continue exactly where it stopped, with no gap or repeat"
