"""Assembles the CPU test programs in tests/guests/programs/*.asm into flat firmware images.

`build_program("pm_int")` runs `nasm -f bin` on programs/pm_int.asm (with programs/ on the include
path) and returns the image. Results are cached in <repo>/build/programs, keyed by a hash of the
program source, every include file and the defines, so rebuilding is free when nothing changed.
`defines` become `-DNAME=VALUE` (used for smaller iteration counts on slow accelerators)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PROGRAMS_DIR = Path(__file__).resolve().parent / "programs"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / "build" / "programs"
IMAGE_UNIT = 64 * 1024


def program_names() -> list[str]:
    return sorted(p.stem for p in PROGRAMS_DIR.glob("*.asm"))


def _cache_key(name: str, defines: dict[str, object]) -> str:
    h = hashlib.sha256()
    h.update(b"v1\0")
    h.update((PROGRAMS_DIR / f"{name}.asm").read_bytes())
    for inc in sorted(PROGRAMS_DIR.glob("*.inc")):
        h.update(inc.name.encode() + b"\0" + inc.read_bytes())
    for key in sorted(defines):
        h.update(f"-D{key}={defines[key]}\0".encode())
    return h.hexdigest()[:24]


def build_program(name: str, defines: dict[str, object] | None = None) -> bytes:
    """The flat image of programs/<name>.asm (a multiple of 64 KiB), built on first use."""
    defines = dict(defines or {})
    src = PROGRAMS_DIR / f"{name}.asm"
    if not src.is_file():
        raise FileNotFoundError(f"no test program {src}")
    nasm = shutil.which("nasm")
    key = _cache_key(name, defines)
    cached = CACHE_DIR / f"{name}-{key}.bin"
    if cached.is_file():
        return cached.read_bytes()
    if not nasm:
        raise RuntimeError("nasm is missing: run scripts/setup")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [nasm, "-f", "bin", "-w+all", "-I", str(PROGRAMS_DIR) + os.sep]
    cmd += [f"-D{k}={v}" for k, v in sorted(defines.items())]
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        out = Path(tmp) / "out.bin"
        proc = subprocess.run(cmd + ["-o", str(out), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nasm failed on {src.name}:\n{proc.stdout}{proc.stderr}")
        image = out.read_bytes()
        if not image or len(image) % IMAGE_UNIT:
            raise RuntimeError(f"{src.name}: image is {len(image)} bytes, not a multiple of 64 KiB")
        os.replace(out, cached)  # atomic: concurrent builders agree on the content
    return image


if __name__ == "__main__":
    import sys
    for n in sys.argv[1:] or program_names():
        print(n, len(build_program(n)))


def counter_expected_lines(count: int, buf_dwords: int = 8192) -> list[str]:
    """The first `count` lines counter.asm prints after "counter start" (without the newline).

    A model of the program (see the header of programs/counter.asm): the output is a pure function
    of the line number, so a run that was snapshotted and restored must print exactly these."""
    import numpy as np

    mask = 0xFFFFFFFF
    buf = (np.arange(buf_dwords, dtype=np.uint64) * 0x9E3779B9 & mask).astype(np.uint32)
    # sum = sum * 31 + w over the buffer  ==  sum(w[i] * 31**(N-1-i)) mod 2**32
    powers = np.empty(buf_dwords, dtype=np.uint64)
    p = 1
    for i in range(buf_dwords - 1, -1, -1):
        powers[i] = p
        p = p * 31 & mask
    s = 0x12345678
    lines = []
    for n in range(1, count + 1):
        for _ in range(8):
            s ^= (s << 13) & mask
            s ^= s >> 17
            s ^= (s << 5) & mask
            idx = s & (buf_dwords - 1)
            buf[idx] = (int(buf[idx]) + s) & mask
        total = int(((buf.astype(np.uint64) * powers) & mask).sum() & mask)
        lines.append(f"n={n} sum={total:08X}")
    return lines
