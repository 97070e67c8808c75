"""Headbox's build of Unicorn (scripts/build-unicorn, scripts/unicorn/headbox.patch): the patched
library is the one loaded and a write hook still sees every store. Guest stores at the JIT's speed
and self-modifying code: tests/guests/programs/store_speed.asm and smc.asm (test_cpu_programs.py)."""

from __future__ import annotations

import mmap

import unicorn
from unicorn import x86_const as X

from services.vcpu.tcg import cpustate as cs

CODE, DATA = 0x1000, 0x8000


def assemble_loop(body: bytes, count: int) -> bytes:
    """mov ecx, count; loop: body; dec ecx; jnz loop; hlt"""
    loop = body + b"\xff\xc9" + b"\x75" + bytes([(-(len(body) + 4)) & 0xFF])
    return b"\xb9" + count.to_bytes(4, "little") + loop + b"\xf4"


def engine_like_unicorn() -> tuple[unicorn.Uc, mmap.mmap]:
    """RAM mapped read/write/execute from a host mapping, with an UNMAPPED hook: as the tcg engine
    maps it (stock Unicorn keeps every store on its slow path in exactly this setting)."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    ram = mmap.mmap(-1, 0x100000)
    uc.mem_map_ptr(0, len(ram), unicorn.UC_PROT_ALL, cs.ctypes.addressof(cs.ctypes.c_char.from_buffer(ram)))
    uc.hook_add(unicorn.UC_HOOK_MEM_UNMAPPED, lambda *a: False)
    return uc, ram


def run(uc: unicorn.Uc, code: bytes) -> None:
    uc.mem_write(CODE, code)
    uc.reg_write(X.UC_X86_REG_RDI, DATA)
    uc.emu_start(CODE, CODE + len(code))


def test_the_patched_build_is_loaded():
    level = cs.headbox_patch_level()
    assert level >= cs.HEADBOX_PATCH_LEVEL, (
        f"Unicorn {unicorn.__version__} without Headbox's patches (level {level}): run scripts/setup "
        "(scripts/build-unicorn builds and installs it)")


def test_a_write_hook_sees_every_store():
    uc, _ram = engine_like_unicorn()
    seen = []
    uc.hook_add(unicorn.UC_HOOK_MEM_WRITE, lambda _uc, _access, address, *_: seen.append(address),
                None, DATA, DATA + 7)
    run(uc, assemble_loop(b"\x48\x89\x07", 1000))
    run(uc, assemble_loop(b"\x48\x89\x07", 1000))      # translated code, warm TLB: still every store
    assert len(seen) == 2000 and set(seen) == {DATA}
