"""Guest-initiated resets (port 0x92, 0xCF9, triple fault, keyboard controller), pause/resume and
power off of a Machine,
on both accelerators. The program counts its boots in battery-backed CMOS, which a reset keeps."""

import subprocess
import threading
import time

import pytest

from services.hw.memory import MiB
from services.ipc.shm import PrivateRegion
from services.ipc.spec import LaunchSpec
from services.vcpu.engine import StopReason
from services.vcpu.machine import Machine
from tests.conftest import require_kvm

RESETS = r"""
bits 16
org 0
start:
    cli
    xor ax, ax
    mov ss, ax
    mov sp, 0x7000
    mov al, 0x50            ; CMOS scratch byte: the boot counter
    out 0x70, al
    in al, 0x71
    inc al
    mov bl, al
    mov al, 0x50
    out 0x70, al
    mov al, bl
    out 0x71, al
    mov al, '0'
    add al, bl
    out 0xE9, al
    cmp bl, 1
    je by_port92
    cmp bl, 2
    je by_cf9
    cmp bl, 3
    je by_triple_fault
    mov al, '!'
    out 0xE9, al
spin:                       ; stays here until the host pauses, resumes and powers it off
    inc dword [0x600]
    jmp spin
by_port92:
    in al, 0x92
    or al, 1
    out 0x92, al
    jmp $
by_cf9:
    mov dx, 0xCF9
    mov al, 0x02
    out dx, al
    mov al, 0x06
    out dx, al
    jmp $
by_triple_fault:
    o32 lidt [cs:empty_idt]
    int3                    ; no IDT: #GP, then #DF, then shutdown
    jmp $
empty_idt: dw 0
    dd 0
times 0xFFF0-($-$$) db 0
    jmp 0xF000:start
times 0x10000-($-$$) db 0
"""


def assemble(tmp_path, source: str) -> bytes:
    src = tmp_path / "prog.asm"
    src.write_text(source)
    subprocess.run(["nasm", "-f", "bin", "-o", str(tmp_path / "prog.bin"), str(src)], check=True)
    return (tmp_path / "prog.bin").read_bytes()


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_guest_resets_pause_resume_poweroff(accel, tmp_path):
    if accel == "kvm":
        require_kvm()
    output = bytearray()
    machine = Machine(LaunchSpec(vm_id="test", memory_mib=16, accel=accel), debug_sink=output.extend,
                      ram=PrivateRegion(16 * MiB), firmware=assemble(tmp_path, RESETS))
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("reason", machine.run()))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while b"!" not in output and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bytes(output) == b"1234!", "each reset must restart the firmware with CMOS kept"

        machine.engine.request_stop(StopReason.PAUSED)
        runner.join(10)
        assert result.pop("reason") == StopReason.PAUSED
        counter = int.from_bytes(machine.memory.read(0x600, 4), "little")
        time.sleep(0.2)
        assert int.from_bytes(machine.memory.read(0x600, 4), "little") == counter, "paused guests do not run"

        runner = threading.Thread(target=lambda: result.setdefault("reason", machine.run()))
        runner.start()
        deadline = time.monotonic() + 30
        while int.from_bytes(machine.memory.read(0x600, 4), "little") == counter and time.monotonic() < deadline:
            time.sleep(0.01)
        assert int.from_bytes(machine.memory.read(0x600, 4), "little") != counter, "resumed guests run again"
        machine.engine.request_stop(StopReason.POWEROFF)
        runner.join(10)
        assert result["reason"] == StopReason.POWEROFF
    finally:
        if runner.is_alive():
            machine.engine.request_stop(StopReason.POWEROFF)
            runner.join(10)
        machine.close()


KEYBOARD_RESET = r"""
bits 16
org 0
start:
    mov al, 0x51            ; CMOS scratch byte: boots seen
    out 0x70, al
    in al, 0x71
    inc al
    mov bl, al
    mov al, 0x51
    out 0x70, al
    mov al, bl
    out 0x71, al
    mov al, '0'
    add al, bl
    out 0xE9, al
    cmp bl, 1
    jne done
    mov al, 0xFE            ; 8042 command: pulse the CPU reset line
    out 0x64, al
    jmp $
done:
    mov al, 0
    out 0xF4, al
    jmp $
times 0xFFF0-($-$$) db 0
    jmp 0xF000:start
times 0x10000-($-$$) db 0
"""


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_keyboard_controller_reset(accel, tmp_path):
    if accel == "kvm":
        require_kvm()
    output = bytearray()
    machine = Machine(LaunchSpec(vm_id="test", memory_mib=16, accel=accel, exit_port=0xF4),
                      debug_sink=output.extend, ram=PrivateRegion(16 * MiB),
                      firmware=assemble(tmp_path, KEYBOARD_RESET))
    timer = threading.Timer(60, machine.engine.request_stop, (StopReason.PAUSED,))
    timer.start()
    try:
        assert machine.run() == StopReason.POWEROFF
    finally:
        timer.cancel()
        machine.close()
    assert bytes(output) == b"12", "the 8042's reset pulse restarts the firmware once"
