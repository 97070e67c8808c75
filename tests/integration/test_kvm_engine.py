"""KvmEngine on the real /dev/kvm with tiny nasm firmware images from kvm_programs/.

They fail (never skip) without /dev/kvm. The build machine's /dev/kvm is a ~1000x slower software nested
hypervisor (kvm_pvm), so every program runs thousands of instructions, not millions."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import msgpack
import numpy as np
import pytest

from services.hw.memory import PAGE, GuestMemory, MiB
from services.ipc.shm import PrivateRegion, SharedRegion
from services.vcpu.engine import EngineError, StopReason, create_engine
from tests.conftest import require_kvm
from tests.guests.runner import ProgramBus, run_program

PROGRAMS = Path(__file__).parent / "kvm_programs"
RAM_MIB = 16
COUNTER_OUTPUT = b"cqphglfrfvwnclgrijuvqwwucsdwlaptgrazinuporcroliruhahuralotenwtgd"  # checked under QEMU TCG


pytestmark = pytest.mark.kvm


@pytest.fixture(autouse=True)
def kvm_device():
    require_kvm()   # a failure, never a skip (DESIGN.md §5)


@pytest.fixture(scope="session")
def assemble(tmp_path_factory):
    """assemble(name, **defines) -> the 64 KiB image of kvm_programs/<name>.asm, built once per session."""
    if not shutil.which("nasm"):
        pytest.fail("nasm is missing: install it to build the KVM test programs")
    build = tmp_path_factory.mktemp("kvm_programs")
    built: dict[tuple, bytes] = {}

    def build_image(name: str, **defines) -> bytes:
        key = (name, tuple(sorted(defines.items())))
        if key not in built:
            out = build / f"{name}-{len(built)}.bin"
            flags = [f"-D{k}={v}" for k, v in defines.items()]
            subprocess.run(["nasm", "-f", "bin", f"-I{PROGRAMS}/", *flags, "-o", str(out),
                            str(PROGRAMS / f"{name}.asm")], check=True, capture_output=True)
            built[key] = out.read_bytes()
        return built[key]

    return build_image


class RecordingBus(ProgramBus):
    """ProgramBus plus a record of string reads and MMIO, a scripted IN-string port and optional hooks."""

    def __init__(self):
        super().__init__()
        self.string_reads: list[tuple[int, int, int]] = []    # (port, size, count)
        self.mmio: list[tuple] = []
        self.pause_after: int | None = None                  # request PAUSED after this many bytes
        self.pause_on_string_read = False
        self.on_byte = None

    def _out(self, data: bytes) -> None:
        super()._out(data)
        if self.on_byte:
            self.on_byte(data)
        if self.pause_after is not None and len(self.result.output) >= self.pause_after:
            self.pause_after = None
            self.engine.request_stop(StopReason.PAUSED)

    def pio_read_string(self, port, size, count):
        self.string_reads.append((port, size, count))
        if self.pause_on_string_read:
            self.engine.request_stop(StopReason.PAUSED)
        if port == 0x510:
            return b"insw-ok!"[:size * count]
        return super().pio_read_string(port, size, count)

    def mmio_read(self, addr, size):
        self.mmio.append(("read", addr, size))
        return 0x44434241

    def mmio_write(self, addr, size, value):
        self.mmio.append(("write", addr, size, value))


class Machine:
    """An engine, its memory and a RecordingBus, with run() bounded by a watchdog."""

    def __init__(self, image: bytes, *, cpus: int = 1, ram=None, **options):
        self.ram = ram or PrivateRegion(RAM_MIB * MiB)
        self.memory = GuestMemory(self.ram, image)
        self.memory.load_firmware_shadow()
        self.bus = RecordingBus()
        self.engine = create_engine("kvm", self.memory, self.bus, cpus, **options)
        self.bus.engine = self.engine

    @property
    def output(self) -> bytes:
        return self.bus.result.output

    def run(self, timeout: float = 20.0) -> StopReason:
        watchdog = threading.Timer(timeout, self.engine.request_stop, (StopReason.ERROR,))
        watchdog.daemon = True
        watchdog.start()
        try:
            return self.engine.run()
        finally:
            watchdog.cancel()

    def close(self) -> None:
        self.engine.close()


@pytest.fixture
def machines():
    made: list[Machine] = []

    def make(image: bytes, **kwargs) -> Machine:
        made.append(Machine(image, **kwargs))
        return made[-1]

    yield make
    for machine in made:
        machine.close()


# -- programs through the standard runner ---------------------------------------------------------------
def test_hello_through_runner(assemble):
    result = run_program("kvm", assemble("hello"), timeout=20)
    assert (result.output, result.exit_code, result.stop) == (b"Hello from KVM\n", 0, "poweroff")


def test_counter_matches_qemu_output(assemble):
    result = run_program("kvm", assemble("counter"), timeout=20)
    assert (result.output, result.exit_code) == (COUNTER_OUTPUT, 0x2A)


def test_two_vcpus_run(assemble):
    """The AP is started by INIT/SIPI through the in-kernel LAPIC and reports APIC ID 1 from CPUID."""
    result = run_program("kvm", assemble("smp"), cpus=2, timeout=20)
    assert (result.output, result.exit_code, result.stop) == (b"A1B", 0, "poweroff")


# -- exits -------------------------------------------------------------------------------------------------
def test_rep_string_io(assemble, machines):
    """`rep insw` arrives as one exit with count 4 (one pio_read_string call). KVM's emulator sends OUTS
    one element per exit (emulate.c em_out passes count 1), so `rep outsb` is checked for its bytes;
    tests/unit/test_kvm_exits.py covers the batched-OUT path."""
    machine = machines(assemble("rep_string"))
    assert machine.run() == StopReason.POWEROFF
    assert machine.output == b"0123456789" * 30 + b"insw-ok!"
    assert machine.bus.string_reads == [(0x510, 2, 4)]


def test_pending_in_completes_before_run_returns(assemble, machines):
    """A stop requested while serving `rep insw` returns only after KVM stored the data (research §1.3):
    the guest RAM already holds it, so a snapshot taken now is consistent."""
    machine = machines(assemble("rep_string"))
    machine.bus.pause_on_string_read = True
    assert machine.run() == StopReason.PAUSED
    assert machine.memory.read(0x800, 8) == b"insw-ok!"
    machine.bus.pause_on_string_read = False
    assert machine.run() == StopReason.POWEROFF
    assert machine.output.endswith(b"insw-ok!")


def test_mmio_reaches_the_bus_and_rom_writes_are_dropped(assemble, machines):
    machine = machines(assemble("mmio"))
    assert machine.run() == StopReason.POWEROFF
    assert machine.bus.mmio == [("write", 0xA0000, 1, 0x5A), ("write", 0xA0010, 2, 0x1234),
                                ("write", 0xA0020, 4, 0xDEADBEEF), ("read", 0xA0040, 4)]
    assert machine.output == b"ABCD\xfa"   # the read value, then the ROM's first byte (cli) unchanged
    assert machine.memory.bios_rom.buf[0] == 0xFA


def test_set_irq_and_in_kernel_pit(assemble, machines):
    machine = machines(assemble("irq"))

    def pulse_keyboard_line(data):
        if data == b"W":
            machine.engine.set_irq(1, True)
            machine.engine.set_irq(1, False)

    machine.bus.on_byte = pulse_keyboard_line
    assert machine.run() == StopReason.POWEROFF
    assert machine.output == b"WKTTT"


def test_triple_fault_then_reset(assemble, machines):
    machine = machines(assemble("boots"))
    assert machine.run() == StopReason.TRIPLE_FAULT
    assert machine.output == b"R1S1"
    machine.engine.reset()
    # RAM keeps its boot count, the firmware shadow is reloaded, the CPU starts at the reset vector.
    assert machine.run() == StopReason.POWEROFF
    assert machine.output == b"R1S1R2S1"
    assert machine.bus.result.exit_code == 2


# -- stopping ---------------------------------------------------------------------------------------------
def test_request_stop_and_resume(assemble, machines):
    machine = machines(assemble("counter", DELAY=20000))
    pauses = 0
    while True:
        timer = threading.Timer(0.05, machine.engine.request_stop)
        timer.start()
        reason = machine.run()
        timer.cancel()
        if reason != StopReason.PAUSED:
            break
        pauses += 1
        assert pauses < 500, "the program never finished"
    assert reason == StopReason.POWEROFF
    assert pauses >= 1
    assert machine.output == COUNTER_OUTPUT


def test_stop_requested_before_run_returns_at_once(assemble, machines):
    machine = machines(assemble("counter"))
    machine.engine.request_stop(StopReason.PAUSED)
    assert machine.run() == StopReason.PAUSED
    assert machine.output == b""
    assert machine.run() == StopReason.POWEROFF
    assert machine.output == COUNTER_OUTPUT


def test_engine_must_be_created_in_the_main_thread(assemble):
    errors = []

    def create():
        try:
            create_engine("kvm", GuestMemory(PrivateRegion(2 * MiB), assemble("hello")), ProgramBus())
        except EngineError as e:
            errors.append(str(e))

    thread = threading.Thread(target=create)
    thread.start()
    thread.join()
    assert errors and "main thread" in errors[0]


def test_missing_device_is_one_clear_error(assemble):
    memory = GuestMemory(PrivateRegion(2 * MiB), assemble("hello"))
    with pytest.raises(EngineError, match="cannot open /nonexistent/kvm: No such file"):
        create_engine("kvm", memory, ProgramBus(), device="/nonexistent/kvm")


# -- state ----------------------------------------------------------------------------------------------
def _continue_in_fresh_process(ram_name: str, image: bytes, blob: bytes, queue) -> None:
    """Child process (spawn): a fresh engine over a copy of the RAM, restored from the snapshot."""
    ram = SharedRegion.open(ram_name)
    bus = ProgramBus()
    engine = create_engine("kvm", GuestMemory(ram, image), bus, 1)
    bus.engine = engine
    try:
        engine.restore(msgpack.unpackb(blob))
        reason = engine.run()
        queue.put((reason.value, bus.result.output, bus.result.exit_code))
    finally:
        engine.close()
        ram.close()


def test_snapshot_restores_in_a_fresh_process(assemble, machines):
    image = assemble("counter")
    machine = machines(image)
    machine.bus.pause_after = 20
    assert machine.run() == StopReason.PAUSED
    assert machine.output == COUNTER_OUTPUT[:20]

    state = machine.engine.snapshot()
    assert (state["version"], state["accel"], len(state["cpus"])) == (1, "kvm", 1)
    assert set(state["irqchip"]) == {"pic_master", "pic_slave", "ioapic"}
    assert "pit" in state and "clock" in state
    blob = msgpack.packb(state)     # plain data only: no fds, no pointers
    with SharedRegion.create(f"headbox-test-{uuid.uuid4().hex}", machine.ram.size) as ram_copy:
        ram_copy.buf[:] = machine.ram.buf[:]
        context = multiprocessing.get_context("spawn")
        queue = context.SimpleQueue()
        child = context.Process(target=_continue_in_fresh_process, args=(ram_copy.name, image, blob, queue))
        child.start()
        child.join(60)
        assert child.exitcode == 0, "the restoring process failed"
        child_reason, child_output, child_exit = queue.get()

    assert machine.run() == StopReason.POWEROFF
    assert machine.output == COUNTER_OUTPUT
    assert (child_reason, child_output, child_exit) == ("poweroff", COUNTER_OUTPUT[20:], 0x2A)


def test_snapshot_restore_in_the_same_engine_rewinds(assemble, machines):
    machine = machines(assemble("counter"))
    machine.bus.pause_after = 10
    assert machine.run() == StopReason.PAUSED
    state, ram = machine.engine.snapshot(), bytes(machine.ram.buf)
    assert machine.run() == StopReason.POWEROFF
    machine.ram.buf[:] = ram
    machine.engine.restore(state)
    assert machine.run() == StopReason.POWEROFF
    assert machine.output == COUNTER_OUTPUT + COUNTER_OUTPUT[10:]


def test_restore_rejects_another_accelerator(assemble, machines):
    machine = machines(assemble("hello"))
    state = machine.engine.snapshot()
    with pytest.raises(EngineError, match="tcg"):
        machine.engine.restore({**state, "accel": "tcg"})


def test_dirty_pages_show_guest_writes(assemble, machines):
    machine = machines(assemble("dirty"))
    pages = machine.ram.size // PAGE

    def bits() -> np.ndarray:
        bitmap = machine.engine.dirty_pages()
        assert len(bitmap) == pages // 8
        return np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")

    assert bits().all()                          # first call: everything
    assert machine.run() == StopReason.POWEROFF
    dirty = set(np.flatnonzero(bits()).tolist())
    assert {0x50, 0x101} <= dirty                # the program's two stores (low RAM, above 1 MiB)
    assert 0x51 not in dirty and 0x100 not in dirty
    assert not bits().any()                      # fetching cleared the log
    machine.engine.reset()                       # the host reloads the shadow: KVM cannot log that
    assert set(np.flatnonzero(bits()).tolist()) == set(range(0xF0, 0x100))


def test_cpuid_overrides_mask_leaves(assemble, machines):
    """A mask on leaf 1 reaches the vCPU's CPUID table; an unknown leaf is a clear error."""
    machine = machines(assemble("hello"), cpuid_overrides={(1, 0): (0xFFFFFFFF, 0xFFFFFFFF, 0, 0xFFFFFFFF)})
    leaf1 = [row for row in machine.engine.snapshot()["cpus"][0]["cpuid"] if row[0] == 1]
    assert leaf1 and leaf1[0][5] == 0
    with pytest.raises(EngineError, match="0x7777"):
        Machine(assemble("hello"), cpuid_overrides={(0x7777, 0): (0, 0, 0, 0)})
