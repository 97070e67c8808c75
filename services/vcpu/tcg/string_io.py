"""REP INS in one step: Unicorn calls the IN hook once per element, so a 512-byte sector read by
`rep insw` costs 256 Python calls. The first call fetches the whole string from the bus, writes
all but the first element straight into guest memory and leaves the JIT the first to store."""

from __future__ import annotations

from services.vcpu.tcg import cpustate as cs
from services.vcpu.tcg.delivery import CpuFault

_PREFIXES = frozenset((0x66, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF2, 0xF3))


class RepIns:
    """How one instruction at a linear address reads a string: (is REP INS, address size)."""

    __slots__ = ("rep", "address_size")

    def __init__(self, rep: bool, address_size: int):
        self.rep, self.address_size = rep, address_size


def decode(code: bytes, hflags: int) -> RepIns:
    if hflags & cs.HF_CS64:
        size = 8
    else:
        size = 4 if hflags & cs.HF_CS32 else 2
    rep = False
    for byte in code:
        if byte in (0xF3, 0xF2):
            rep = True
        elif byte == 0x67:
            size = {8: 4, 4: 2, 2: 4}[size]
        elif byte in _PREFIXES or (hflags & cs.HF_CS64 and 0x40 <= byte <= 0x4F):
            continue
        else:
            return RepIns(rep and byte in (0x6C, 0x6D), size)
    return RepIns(False, size)


def complete(engine, info: RepIns, port: int, size: int) -> int | None:
    """Do a whole REP INS now; returns the last element for the JIT to store, or None to let
    Unicorn go element by element (count of 0 or 1, DF set, a destination page not present)."""
    env = engine.env
    mask = (1 << (8 * info.address_size)) - 1
    count = env.regs[1] & mask
    # Inside the JIT the direction flag lives in env.df (+1 or -1), not in env.eflags.
    if count < 2 or env.df < 0 or count * size > 1 << 20:
        return None
    di = env.regs[7] & mask
    base = env.segs[cs.R_ES].base
    if (di + count * size - 1) > mask:           # the index would wrap: leave it to the JIT
        return None
    try:
        pieces = engine.delivery.translate_write(base + di + size, count * size - size,
                                                 user=(env.hflags & cs.HF_CPL_MASK) == 3)
    except CpuFault:
        return None
    data = engine.bus.pio_read_string(port, size, count)
    pos = size
    for gpa, length in pieces:
        engine._phys_write(gpa, data[pos:pos + length])
        engine.forget_code(gpa, length)
        pos += length
    # The JIT stores the value we return at ES:[DI] (an address it computed before calling us),
    # then steps DI and CX once, reloading them from the CPU state after the hook returns.
    env.regs[7] = (env.regs[7] & ~mask) | ((di + (count - 1) * size) & mask)
    env.regs[1] = (env.regs[1] & ~mask) | 1
    return int.from_bytes(data[:size], "little")
