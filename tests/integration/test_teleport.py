"""Teleporting on one host (tcg): a guest that prints a counter with a checksum of a RAM buffer to
its serial port moves from a source VM to a waiting target VM; the output carries on without a gap
or repeat. Then every refusal and fault leaves the source running."""

from __future__ import annotations

import pytest

from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.naming import endpoint
from services.teleport.hardware import hardware_config
from services.teleport.source import teleport_out
from services.teleport.vm import TeleportError
from tests.conftest import require_kvm
from tests.guests.build import build_program, counter_expected_lines
from tests.support.teleport_vms import (
    BUF_DWORDS,
    RAM_MIB,
    Target,
    Vm,
    counter_firmware,
    counter_lines,
    wait_lines,
)
from tests.waiting import free_port


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    return counter_firmware(tmp_path_factory.mktemp("teleport"))



def assert_continuous(source_log, target_log, buf_dwords: int = BUF_DWORDS):
    """The two serial logs, joined, are one uninterrupted run (a line may be cut at the switch)."""
    before, after = counter_lines(source_log), counter_lines(target_log)
    joined = (open(source_log, "rb").read() + open(target_log, "rb").read()).decode("latin-1")
    lines = [line for line in joined.split("\n")[:-1] if line.startswith("n=")]
    assert lines == counter_expected_lines(len(lines), buf_dwords), \
        "the counter must continue on the target with no gap or repeat (and the same RAM checksums)"
    return before, after


def test_teleport_on_localhost_continues_the_guest(firmware, tmp_path):
    source = Vm(firmware, tmp_path)
    target_vm = Vm(firmware, tmp_path, incoming=True)
    try:
        wait_lines(source.log, 20)
        target = Target(target_vm, password="s3cret")
        stats = teleport_out(source.spec.vm_id, hardware_config(source.spec), "127.0.0.1", target.port,
                             password="s3cret")
        target.thread.join(30)
        assert target.error is None and target.result is not None and target.result.resumed
        source.waiter.join(15)
        assert not source.running, "the source VM powers off after the hand-over"
        count = len(counter_lines(source.log))
        wait_lines(target_vm.log, 10)
        before, after = assert_continuous(source.log, target_vm.log)
        assert len(before) >= count - 1 and len(after) >= 9
        assert stats.rounds >= 1 and stats.downtime_ms > 0
        print(f"teleport: {stats.rounds} rounds, {stats.bytes_sent / 2**20:.1f} MiB, "
              f"downtime {stats.downtime_ms:.0f} ms {stats.phases}, total {stats.total_ms:.0f} ms")
    finally:
        source.close()
        target_vm.close()


@pytest.mark.kvm
def test_teleport_between_kvm_vms(tmp_path):
    """The kvm accelerator moves too: the vCPU process's write log sees the guest's writes through
    KVM (this host's /dev/kvm is slow, so a small buffer)."""
    require_kvm()
    image = tmp_path / "counter-kvm.bin"
    image.write_bytes(build_program("counter", {"BUF_DWORDS": 256, "OUT_PORT": 0x3F8}))
    source = Vm(str(image), tmp_path, memory_mib=16, accel="kvm")
    target_vm = Vm(str(image), tmp_path, incoming=True, memory_mib=16, accel="kvm")
    try:
        wait_lines(source.log, 3, timeout=300)
        target = Target(target_vm)
        teleport_out(source.spec.vm_id, hardware_config(source.spec), "127.0.0.1", target.port)
        target.thread.join(60)
        assert target.error is None and target.result.resumed
        source.waiter.join(30)
        wait_lines(target_vm.log, 3, timeout=300)
        assert_continuous(source.log, target_vm.log, buf_dwords=256)
    finally:
        source.close()
        target_vm.close()


def test_accelerator_mismatch_is_refused(firmware, tmp_path):
    require_kvm()
    source = Vm(firmware, tmp_path)
    target_vm = Vm(firmware, tmp_path, incoming=True, accel="kvm")
    try:
        wait_lines(source.log, 2)
        target = Target(target_vm)
        with pytest.raises(TeleportError, match="same accelerator"):
            teleport_out(source.spec.vm_id, hardware_config(source.spec), "127.0.0.1", target.port)
        target.thread.join(30)
        assert target.error and "same accelerator" in target.error
        assert_source_unharmed(source)
    finally:
        source.close()
        target_vm.close()


@pytest.fixture(scope="module")
def source_vm(firmware, tmp_path_factory):
    """One running source for the refusal tests: each must leave it running and counting."""
    vm = Vm(firmware, tmp_path_factory.mktemp("source"))
    wait_lines(vm.log, 5)
    yield vm
    vm.close()


def assert_source_unharmed(vm: Vm):
    count = len(counter_lines(vm.log))
    wait_lines(vm.log, count + 5, timeout=60)
    assert vm.running
    lines = counter_lines(vm.log)
    assert lines == counter_expected_lines(len(lines), BUF_DWORDS)


def test_wrong_password_is_refused_and_the_target_keeps_waiting(source_vm, firmware, tmp_path):
    target_vm = Vm(firmware, tmp_path, incoming=True)
    try:
        target = Target(target_vm, password="right")
        with pytest.raises(TeleportError, match="Invalid password"):
            teleport_out(source_vm.spec.vm_id, hardware_config(source_vm.spec), "127.0.0.1", target.port,
                         password="wrong")
        assert target.thread.is_alive(), "a wrong password ends that connection, not the target's wait"
        assert_source_unharmed(source_vm)
    finally:
        target_vm.close()


def test_ram_mismatch_is_refused_on_both_ends(source_vm, firmware, tmp_path):
    target_vm = Vm(firmware, tmp_path, incoming=True, memory_mib=RAM_MIB * 2)
    try:
        target = Target(target_vm)
        with pytest.raises(TeleportError, match=r"Config mismatch - RAM"):
            teleport_out(source_vm.spec.vm_id, hardware_config(source_vm.spec), "127.0.0.1", target.port)
        target.thread.join(30)
        assert target.error and "Config mismatch - RAM" in target.error
        assert_source_unharmed(source_vm)
    finally:
        target_vm.close()


def test_attached_media_mismatch_is_refused(source_vm, firmware, tmp_path):
    target_vm = Vm(firmware, tmp_path, incoming=True, drives=["1:0:dvd"])
    try:
        target = Target(target_vm)
        with pytest.raises(TeleportError, match=r"Config mismatch - attached media"):
            teleport_out(source_vm.spec.vm_id, hardware_config(source_vm.spec), "127.0.0.1", target.port)
        target.thread.join(30)
        assert target.error and "attached media" in target.error
        assert_source_unharmed(source_vm)
    finally:
        target_vm.close()


def test_target_not_waiting(source_vm):
    with pytest.raises(TeleportError, match=r"Failed to connect to port \d+ on '127.0.0.1'"):
        teleport_out(source_vm.spec.vm_id, hardware_config(source_vm.spec), "127.0.0.1", free_port())
    assert_source_unharmed(source_vm)


def test_target_dying_mid_stream_leaves_the_source_running(source_vm, firmware, tmp_path):
    target_vm = Vm(firmware, tmp_path, incoming=True)
    try:
        target = Target(target_vm)
        # The target's processes die once the first round is through.
        with pytest.raises(TeleportError):
            teleport_out(source_vm.spec.vm_id, hardware_config(source_vm.spec), "127.0.0.1", target.port,
                         progress=lambda percent: target_vm.processes.kill())
        target.thread.join(30)
        assert target.error
        assert_source_unharmed(source_vm)
    finally:
        target_vm.close()


def test_cpu_features_the_target_lacks_are_refused_until_cpuid_hides_them(source_vm, firmware, tmp_path):
    """A target whose guest would not get a feature the source's guest was shown refuses it; the same
    --cpuid restriction on the source makes the two compatible."""
    shown = ControlClient(endpoint(source_vm.spec.vm_id, "control-vcpu"))
    try:
        ecx = shown.call(ops.Status())["cpu_features"]["0x1.ecx"]
    finally:
        shown.close()
    sse42 = 1 << 20
    assert ecx & sse42, "the tcg model shows SSE4.2"
    restricted = [[1, 0x663, 0x800, ecx & ~sse42, 0x078BFBFD]]
    target_vm = Vm(firmware, tmp_path, incoming=True, cpuid=restricted)
    try:
        target = Target(target_vm)
        with pytest.raises(TeleportError, match=r"lacks features the guest was shown \(CPUID 0x1.ecx 0x100000\)"):
            teleport_out(source_vm.spec.vm_id, hardware_config(source_vm.spec), "127.0.0.1", target.port)
        target.thread.join(30)
        assert target.error and "lacks features" in target.error
        assert_source_unharmed(source_vm)
    finally:
        target_vm.close()
    source = Vm(firmware, tmp_path, cpuid=restricted)
    target_vm = Vm(firmware, tmp_path, incoming=True, cpuid=restricted)
    try:
        wait_lines(source.log, 5)
        target = Target(target_vm)
        teleport_out(source.spec.vm_id, hardware_config(source.spec), "127.0.0.1", target.port)
        target.thread.join(30)
        assert target.error is None and target.result.resumed
        wait_lines(target_vm.log, 5)
        assert_continuous(source.log, target_vm.log)
    finally:
        source.close()
        target_vm.close()


def test_a_second_teleport_after_failures_still_works(source_vm, firmware, tmp_path):
    """After the refusals above, the same source moves for real."""
    target_vm = Vm(firmware, tmp_path, incoming=True)
    try:
        target = Target(target_vm)
        teleport_out(source_vm.spec.vm_id, hardware_config(source_vm.spec), "127.0.0.1", target.port)
        target.thread.join(30)
        assert target.error is None and target.result.resumed
        source_vm.waiter.join(15)
        wait_lines(target_vm.log, 5)
        assert_continuous(source_vm.log, target_vm.log)
    finally:
        target_vm.close()
