"""Acceptance: Debian's SeaBIOS POSTs to its boot attempts on both accelerators, and under KVM
with two vCPUs it finds both processors (its debug-port output is the evidence)."""

import threading
import time

import pytest

from services.hw.memory import GuestMemory, MiB
from services.ipc.shm import PrivateRegion
from services.vcpu.engine import StopReason, create_engine
from services.vcpu.platform import build_platform
from tests.conftest import require_kvm

SEABIOS = "/usr/share/seabios/bios.bin"
END_OF_POST = b"No bootable device."


def boot_seabios(accel: str, cpus: int = 1, timeout: float = 60.0) -> tuple[str, float]:
    with open(SEABIOS, "rb") as f:
        memory = GuestMemory(PrivateRegion(128 * MiB), f.read())
    memory.load_firmware_shadow()
    output = bytearray()
    engine = None
    bus = build_platform(memory, cpus=cpus, debug_sink=output.extend,
                         reset=lambda: engine.request_stop(StopReason.RESET),
                         poweroff=lambda: engine.request_stop(StopReason.POWEROFF))
    engine = create_engine(accel, memory, bus, cpus)
    start = time.monotonic()
    done = threading.Event()

    def watch():
        while END_OF_POST not in output and time.monotonic() - start < timeout:
            time.sleep(0.005)
        done.set()
        engine.request_stop(StopReason.PAUSED)

    threading.Thread(target=watch, daemon=True).start()
    try:
        reason = engine.run()
    finally:
        done.wait(5)
        engine.close()
    assert reason == StopReason.PAUSED, f"{accel}: the engine stopped early: {reason}\n{output.decode('latin-1')}"
    return output.decode("latin-1"), time.monotonic() - start


def assert_posted(text: str, cpus: int) -> None:
    assert "SeaBIOS (version 1.16" in text
    assert "Found QEMU fw_cfg" in text
    assert "RamSize: 0x08000000" in text or "e820 map has" in text
    assert f"Found {cpus} cpu(s) max supported {cpus} cpu(s)" in text
    assert "Booting from Hard Disk..." in text
    assert END_OF_POST.decode() in text


def test_seabios_posts_on_tcg():
    text, seconds = boot_seabios("tcg")
    assert_posted(text, 1)
    assert seconds < 10, f"POST took {seconds:.1f} s on tcg"


def test_seabios_posts_on_kvm():
    require_kvm()
    text, _ = boot_seabios("kvm", timeout=120)
    assert_posted(text, 1)
    assert "Running on KVM" in text


def test_seabios_sees_two_cpus_on_kvm():
    require_kvm()
    text, _ = boot_seabios("kvm", cpus=2, timeout=120)
    assert_posted(text, 2)


def test_tcg_refuses_more_than_one_cpu():
    from services.vcpu.engine import EngineError
    memory = GuestMemory(PrivateRegion(4 * MiB), b"\xf4" * 0x10000)
    with pytest.raises(EngineError, match="one vCPU"):
        create_engine("tcg", memory, None, cpus=2)
