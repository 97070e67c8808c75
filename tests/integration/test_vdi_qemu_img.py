"""VDI images checked against QEMU's qemu-img and qemu-io as the oracle: our images pass `qemu-img
check` and convert to the bytes we wrote, QEMU's images read the same in ours, and a writer killed
with SIGKILL at random moments leaves an image that qemu-img check accepts."""

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from services.images import raw, vdi
from services.images.backend import ImageError

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tool(name):
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is missing (apt-get install qemu-utils): the VDI oracle tests need it",
                    pytrace=False)
    return path


def run(*args):
    result = subprocess.run([tool(args[0]), *args[1:]], capture_output=True, text=True)
    return result


def check(path):
    """qemu-img check's verdict: (exit code, everything it printed)."""
    result = run("qemu-img", "check", "-f", "vdi", str(path))
    return result.returncode, (result.stdout + result.stderr).strip()


def assert_clean(path):
    code, out = check(path)
    assert code == 0 and "No errors were found" in out, out


def converted(path, tmp_path):
    out = tmp_path / f"{os.path.basename(path)}.raw"
    result = run("qemu-img", "convert", "-f", "vdi", "-O", "raw", str(path), str(out))
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    out.unlink()
    return data


def qemu_io(path, *commands):
    args = ["qemu-io", "-f", "vdi"]
    for command in commands:
        args += ["-c", command]
    result = run(*args, str(path))
    assert result.returncode == 0 and "Pattern verification failed" not in result.stdout, \
        result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("variant", ["Standard", "Fixed"])
def test_our_images_pass_check_and_info(tmp_path, variant):
    path = tmp_path / f"{variant}.vdi"
    vdi.create(str(path), 300 * MiB + 512 * 7, variant)
    assert_clean(path)
    info = json.loads(run("qemu-img", "info", "--output=json", str(path)).stdout)
    assert info["format"] == "vdi" and info["virtual-size"] == 300 * MiB + 512 * 7
    assert info["cluster-size"] == MiB
    with vdi.open(str(path)) as img:
        img.write(299 * MiB, b"\x5a" * (MiB + 512 * 7))
    assert_clean(path)
    qemu_io(path, f"read -P 0x5a {299 * MiB} {MiB + 512 * 7}", "read -P 0 0 1M")


SCATTERED = [  # (offset, length) in bytes; block size is 1 MiB
    (0, 512),                                  # the first sector
    (150 * MiB, 4096),                         # the middle
    (300 * MiB - 512, 512),                    # the last sector
    (10 * MiB - 512, 1024),                    # across a block boundary
    (20 * MiB, MiB),                           # exactly one block
    (30 * MiB + 512, 3 * MiB),                 # three blocks and a bit, sector- not block-aligned
    (50 * MiB - 4096, 2 * MiB + 8192),         # straddling three blocks
    (150 * MiB + 2048, 2048),                  # into an allocated block, after earlier data
    (31 * MiB, MiB),                           # overwrite inside the earlier run
]


@pytest.mark.parametrize("variant", ["Standard", "Fixed"])
def test_scattered_writes_match_qemu_img_convert(tmp_path, variant):
    path = tmp_path / "s.vdi"
    size = 300 * MiB
    vdi.create(str(path), size, variant)
    model = bytearray(size)
    rng = random.Random(1)
    with vdi.open(str(path)) as img:
        for offset, length in SCATTERED:
            data = rng.randbytes(length)
            img.write(offset, data)
            model[offset:offset + length] = data
        img.flush()
        assert img.read(0, size) == model
    assert_clean(path)
    assert converted(path, tmp_path) == model


@pytest.mark.parametrize("static", [False, True])
def test_images_made_by_qemu(tmp_path, static):
    path = tmp_path / "q.vdi"
    opts = ["-o", "static=on"] if static else []
    assert run("qemu-img", "create", "-f", "vdi", *opts, str(path), "64M").returncode == 0
    qemu_io(path, "write -P 0xaa 0 1M", "write -P 0x55 33M 64k", "write -P 0x11 63M 1M")
    with vdi.open(str(path)) as img:
        assert img.size == 64 * MiB and img.variant == ("Fixed" if static else "Standard")
        mine = img.read(0, 64 * MiB)
        assert mine == converted(path, tmp_path)
        assert mine[:MiB] == b"\xaa" * MiB and mine[33 * MiB:33 * MiB + 65536] == b"\x55" * 65536
        assert mine[33 * MiB + 65536:34 * MiB] == bytes(MiB - 65536)
        img.write(33 * MiB + 65536, b"\x66" * 4096)     # into QEMU's partly written block
        img.write(40 * MiB + 512, b"\x77" * (2 * MiB))   # new blocks
        img.write(MiB - 512, b"\x88" * 1024)              # across QEMU's block and a new one
    assert_clean(path)
    qemu_io(path, f"read -P 0xaa 0 {MiB - 512}", f"read -P 0x88 {MiB - 512} 1024",
            f"read -P 0x55 {33 * MiB} 65536", f"read -P 0x66 {33 * MiB + 65536} 4096",
            f"read -P 0x77 {40 * MiB + 512} 2M", f"read -P 0x11 {63 * MiB} 1M")
    # And QEMU keeps writing after us without tripping over our allocations.
    qemu_io(path, "write -P 0x99 10M 1M")
    assert_clean(path)
    with vdi.open(str(path), readonly=True) as img:
        assert img.read(10 * MiB, MiB) == b"\x99" * MiB
        assert img.read(40 * MiB + 512, 2 * MiB) == b"\x77" * (2 * MiB)


def corrupt(path, offset, fmt, *values):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, *values))


@pytest.mark.parametrize("damage", ["truncated header", "bad signature", "bad version",
                                    "entry past the end", "duplicate entries", "short file"])
def test_corrupt_images_give_one_line(tmp_path, damage):
    path = tmp_path / "c.vdi"
    assert run("qemu-img", "create", "-f", "vdi", str(path), "16M").returncode == 0
    qemu_io(path, "write -P 0xaa 0 2M")
    if damage == "truncated header":
        os.truncate(path, 200)
    elif damage == "bad signature":
        corrupt(path, 64, "<I", 0xDEADBEEF)
    elif damage == "bad version":
        corrupt(path, 68, "<I", 0x00010002)
    elif damage == "entry past the end":
        corrupt(path, 512 + 4 * 5, "<I", 9)
        corrupt(path, 388, "<I", 3)
    elif damage == "duplicate entries":
        corrupt(path, 512 + 4 * 5, "<I", 1)
        corrupt(path, 388, "<I", 3)
    else:
        os.truncate(path, os.path.getsize(path) - MiB)
    with pytest.raises(ImageError) as info:
        vdi.open(str(path), readonly=True)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert info.traceback[-1].name in ("_load", "__init__", "open"), "error raised from deep inside"


# -- crash consistency ------------------------------------------------------------------------

class Crash(Exception):
    pass


def write_then_crash(path, monkeypatch, allowed, offset, data):
    """Let vdi make `allowed` writes of one guest write, then stop it dead, like SIGKILL."""
    img = vdi.open(str(path))
    real, done = raw.pwrite_all, [0]

    def pwrite_all(fd, p, buffers, off):
        if done[0] == allowed:
            raise Crash()
        done[0] += 1
        real(fd, p, buffers, off)
    monkeypatch.setattr(vdi, "pwrite_all", pwrite_all)
    try:
        img.write(offset, data)
    except Crash:
        pass
    monkeypatch.undo()
    os.close(img._fd)
    return done[0]


@pytest.mark.parametrize("disk_mib", [800, 3000])
def test_every_crash_point_of_a_near_allocation_is_clean(tmp_path, monkeypatch, disk_mib):
    # Writes of an allocation: modification UUID, data, count+map entries as one write (within
    # the header's page for 800 MiB, spanning into the map's second page for 3000 MiB).
    for step in range(4):
        path = tmp_path / f"p{step}.vdi"
        vdi.create(str(path), disk_mib * MiB)
        with vdi.open(str(path)) as img:
            img.write(0, b"\x01" * MiB)
        write_then_crash(path, monkeypatch, step, (disk_mib - 100) * MiB, b"\x02" * (3 * MiB))
        assert_clean(path)


def test_crash_between_count_and_far_map_entry(tmp_path, monkeypatch):
    # Block 90000's map entry lies past SPAN, so count and entry are two writes. A crash between
    # them is the one state qemu-img check flags: a count one ahead, which leaks a block but loses
    # no data. Our next writable open repairs it.
    path = tmp_path / "big.vdi"
    vdi.create(str(path), 100000 * MiB)
    with vdi.open(str(path)) as img:
        img.write(0, b"\x01" * MiB)
    for step in (0, 1, 2):
        write_then_crash(path, monkeypatch, step, 90000 * MiB, b"\x02" * 512)
        assert_clean(path)
    write_then_crash(path, monkeypatch, 3, 90000 * MiB, b"\x02" * 512)
    code, out = check(path)
    assert code == 2 and "allocated blocks mismatch, is 1, should be 2" in out, out
    qemu_io(path, f"read -P 0 {90000 * MiB} 1M", "read -P 1 0 1M")
    vdi.open(str(path)).close()
    assert_clean(path)


CHILD = textwrap.dedent("""
    import os, random, struct, sys
    from services.images import vdi
    path, seed, size, progress = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    img = vdi.open(path)
    rng = random.Random(seed)
    log = os.open(progress, os.O_WRONLY)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    n = 0
    while True:
        sectors = rng.choice([1, 1, 8, 8, 64, 2048, 2049, 6000])
        offset = rng.randrange(0, size // 512 - sectors + 1) * 512
        img.write(offset, bytes([rng.randrange(1, 256)]) * (sectors * 512))
        n += 1
        os.pwrite(log, struct.pack("<Q", n), 0)
""")


def ops(seed, size, count):
    rng = random.Random(seed)
    for _ in range(count):
        sectors = rng.choice([1, 1, 8, 8, 64, 2048, 2049, 6000])
        offset = rng.randrange(0, size // 512 - sectors + 1) * 512
        yield offset, sectors * 512, rng.randrange(1, 256)


def test_sigkill_at_random_points_leaves_a_clean_image(tmp_path):
    tool("qemu-img")
    size = 200 * MiB            # 200 blocks: every map entry shares the header's page
    rng = random.Random(2024)
    path = tmp_path / "kill.vdi"
    progress = tmp_path / "progress"
    iterations, allocations = 25, 0
    before = bytes(size)
    for iteration in range(iterations):
        if iteration % 2 == 0:   # odd rounds continue on the image the last kill left behind
            path.unlink(missing_ok=True)
            vdi.create(str(path), size)
            before = bytes(size)
        progress.write_bytes(bytes(8))
        seed = rng.randrange(1 << 30)
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(seed), str(size),
                                  str(progress)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.002, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        done = struct.unpack("<Q", progress.read_bytes())[0]

        assert_clean(path)
        theirs = converted(path, tmp_path)
        with vdi.open(str(path), readonly=True) as img:
            ours = img.read(0, size)
            allocations += img.allocated_blocks
        assert ours == theirs, f"iteration {iteration}: our reading differs from qemu-img's"

        # Every completed write is there; the one in flight is there per sector or not at all.
        want = np.frombuffer(before, dtype=np.uint8).copy()
        in_flight = None
        for i, (offset, length, fill) in enumerate(ops(seed, size, done + 1)):
            if i < done:
                want[offset:offset + length] = fill
            else:
                in_flight = (offset, length, fill)
        got = np.frombuffer(ours, dtype=np.uint8)
        differs = np.flatnonzero(got != want)
        if differs.size:
            offset, length, fill = in_flight
            assert differs[0] >= offset and differs[-1] < offset + length, \
                f"iteration {iteration}: bytes changed outside the write in flight"
            assert (got[differs] == fill).all()
        before = ours
    assert allocations > iterations * 10    # the kills really landed among allocations
