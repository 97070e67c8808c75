"""Unit checks of the software accelerator's pieces: the proven CPU-state layout, the choice of
accelerator, change tracking of RAM pages, and SYSCALL/SYSENTER entry state."""

import numpy as np
import pytest
import unicorn
from unicorn import x86_const as X

from services.hw.memory import GuestMemory, MiB
from services.ipc.shm import PrivateRegion
from services.vcpu import engine as base
from services.vcpu.engine import EngineError, choose_accelerator, create_engine
from services.vcpu.tcg import cpustate as cs
from services.vcpu.tcg import fastcall
from services.vcpu.tcg.delivery import GP, UD, CpuFault


def test_cpu_state_is_read_in_place():
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    env = cs.locate_env(uc)
    uc.reg_write(X.UC_X86_REG_RBX, 0x1122334455667788)
    assert env.regs[3] == 0x1122334455667788
    env.regs[3] = 42
    assert uc.reg_read(X.UC_X86_REG_RBX) == 42
    cs.set_eflags(env, 0x246)
    assert uc.reg_read(X.UC_X86_REG_RFLAGS) == 0x246


def test_accelerator_choice(monkeypatch):
    assert choose_accelerator("tcg") == ("tcg", "tcg was requested")
    monkeypatch.setattr(base, "host_has_hardware_virtualization", lambda: (False, "no vmx/svm flag"))
    accel, why = choose_accelerator("auto")
    assert accel == "tcg" and "no vmx/svm flag" in why
    monkeypatch.setattr(base, "host_has_hardware_virtualization", lambda: (True, "vmx"))
    assert choose_accelerator("auto") == ("kvm", "vmx")
    with pytest.raises(EngineError, match="unknown accelerator 'fast'"):
        choose_accelerator("fast")


def test_dirty_pages_track_changes_since_the_last_call():
    memory = GuestMemory(PrivateRegion(4 * MiB), b"\xf4" * 0x10000)
    engine = create_engine("tcg", memory, None)
    try:
        pages = memory.ram_size // 4096
        first = np.unpackbits(np.frombuffer(engine.dirty_pages(), np.uint8), bitorder="little")[:pages]
        assert first.all(), "the first call reports every page"
        assert not any(engine.dirty_pages())
        memory.write(0x5000, b"x")
        memory.write(0x3FF000, b"y")
        bits = np.unpackbits(np.frombuffer(engine.dirty_pages(), np.uint8), bitorder="little")[:pages]
        assert list(np.flatnonzero(bits)) == [5, 0x3FF]
        assert not any(engine.dirty_pages())
    finally:
        engine.close()


def _long_mode_env():
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    env = cs.locate_env(uc)
    return uc, env


def test_syscall_enters_the_kernel_as_the_sdm_says():
    uc, env = _long_mode_env()       # Unicorn starts its 64-bit engine in long mode at CPL 3-less state
    env.efer |= fastcall.EFER_SCE
    env.star = (0x0023 << 48) | (0x0010 << 32)
    env.lstar = 0xFFFFFFFF81000000
    env.fmask = 0x200 | 0x100
    env.eip = 0x401000
    target = fastcall.syscall(env, 0x246 | 0x200)
    assert target == 0xFFFFFFFF81000000
    assert env.regs[1] == 0x401002 and env.regs[11] == 0x246 | 0x200
    assert env.segs[cs.R_CS].selector == 0x10 and env.segs[cs.R_SS].selector == 0x18
    assert env.hflags & cs.HF_CS64 and env.hflags & cs.HF_CPL_MASK == 0
    assert not uc.reg_read(X.UC_X86_REG_RFLAGS) & 0x300


def test_syscall_without_sce_is_undefined_and_sysenter_needs_a_selector():
    _, env = _long_mode_env()
    env.efer &= ~fastcall.EFER_SCE
    with pytest.raises(CpuFault) as fault:
        fastcall.syscall(env, 0x2)
    assert fault.value.vector == UD
    env.sysenter_cs = 0
    with pytest.raises(CpuFault) as fault:
        fastcall.sysenter(env, 0x2)
    assert fault.value.vector == GP


CALLS_A_DEVICE_WRITTEN_FUNCTION = """
bits 16
org 0
start:
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7000
again:
    call 0x0000:0x5000          ; a function that a 'device' rewrites (DMA into RAM)
    out 0xE9, al
    mov ecx, 100000
.delay:
    dec ecx
    jnz .delay
    jmp again
times 0xFFF0-($-$$) db 0
    jmp 0xF000:start
times 0x10000-($-$$) db 0
"""


def test_code_rewritten_by_dma_runs_once_the_engine_is_told(tmp_path):
    import subprocess
    import threading
    import time

    from services.vcpu.engine import StopReason
    from tests.guests.runner import ProgramBus

    (tmp_path / "p.asm").write_text(CALLS_A_DEVICE_WRITTEN_FUNCTION)
    subprocess.run(["nasm", "-f", "bin", "-o", str(tmp_path / "p.bin"), str(tmp_path / "p.asm")], check=True)
    bus = ProgramBus()
    memory = GuestMemory(PrivateRegion(4 * MiB), (tmp_path / "p.bin").read_bytes())
    memory.load_firmware_shadow()
    memory.write(0x5000, bytes([0xB0, ord("A"), 0xCB]))          # mov al, 'A'; retf
    engine = create_engine("tcg", memory, bus)
    bus.engine = engine

    def device():
        time.sleep(0.2)
        memory.write(0x5001, b"B")                                # the DMA: mov al, 'B'
        engine.note_dma([(0x5000, 3)])
        time.sleep(0.3)
        engine.request_stop(StopReason.PAUSED)
    threading.Thread(target=device).start()
    try:
        engine.run()
    finally:
        engine.close()
    out = bus.result.output
    assert out.startswith(b"A") and out.endswith(b"BB"), out


REP_INSW = """
bits 16
org 0
start:
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7000
    mov ax, 0x1000
    mov es, ax
    mov di, 0x0010
    mov dx, 0x1F0
    mov cx, 300
    cld
    rep insw                    ; 300 words from the 'disk' into 1000:0010
    mov ax, di                  ; DI and CX must end as after 300 single steps
    out 0xE9, al
    mov al, ah
    out 0xE9, al
    mov al, cl
    out 0xE9, al
    mov al, 0
    out 0xF4, al
times 0xFFF0-($-$$) db 0
    jmp 0xF000:start
times 0x10000-($-$$) db 0
"""


def test_rep_insw_lands_whole_in_memory(tmp_path):
    import subprocess

    from tests.guests.runner import ProgramBus

    class Disk(ProgramBus):
        def __init__(self):
            super().__init__()
            self.words = iter(range(1, 10_000))
            self.string_reads = 0

        def pio_read(self, port, size):
            return next(self.words) if port == 0x1F0 else super().pio_read(port, size)

        def pio_read_string(self, port, size, count):
            self.string_reads += 1
            return b"".join(self.pio_read(port, size).to_bytes(size, "little") for _ in range(count))

    (tmp_path / "p.asm").write_text(REP_INSW)
    subprocess.run(["nasm", "-f", "bin", "-o", str(tmp_path / "p.bin"), str(tmp_path / "p.asm")], check=True)
    bus = Disk()
    memory = GuestMemory(PrivateRegion(4 * MiB), (tmp_path / "p.bin").read_bytes())
    memory.load_firmware_shadow()
    engine = create_engine("tcg", memory, bus)
    bus.engine = engine
    try:
        engine.run()
    finally:
        engine.close()
    assert bus.result.exit_code == 0
    di = bus.result.output[0] | bus.result.output[1] << 8
    assert di == 0x10 + 600 and bus.result.output[2] == 0, "DI and CX as after 300 elements"
    words = memory.read(0x10010, 600)
    assert [int.from_bytes(words[i:i + 2], "little") for i in range(0, 600, 2)] == list(range(1, 301))
    assert bus.string_reads == 1, "one bus request for the whole string"
