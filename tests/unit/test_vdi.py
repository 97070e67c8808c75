"""VDI images without outside tools: the header we write byte for byte, reads and writes against a
model disk, allocation rules, every kind of corruption, and crashes simulated between writes."""

import os
import random
import struct
import uuid

import numpy as np
import pytest

from services.images import raw, vdi
from services.images.backend import ImageError

MiB = 1 << 20


def header_fields(path):
    with open(path, "rb") as f:
        head = f.read(512)
    (sig, version, header_size, kind, flags, comment, off_bmap, off_data, c, h, s, sector,
     dummy, disk, bs, extra, blocks, allocated, u_create, u_modify, u_link, u_parent) = \
        struct.unpack_from("<IIIII256sII4IIQIIII16s16s16s16s", head, 64)
    return dict(text=head[:64], sig=sig, version=version, header_size=header_size, kind=kind,
                flags=flags, comment=comment, off_bmap=off_bmap, off_data=off_data,
                legacy=(c, h, s, sector), dummy=dummy, disk=disk, bs=bs, extra=extra,
                blocks=blocks, allocated=allocated, u_create=u_create, u_modify=u_modify,
                u_link=u_link, u_parent=u_parent, lchs=struct.unpack_from("<4I", head, 456))


def block_map(path):
    f = header_fields(path)
    with open(path, "rb") as fh:
        fh.seek(f["off_bmap"])
        return np.frombuffer(fh.read(4 * f["blocks"]), dtype="<u4").copy()


def patch(path, offset, fmt, *values):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, *values))


def expect_error(path, *words, readonly=True):
    with pytest.raises(ImageError) as info:
        vdi.open(str(path), readonly=readonly)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.vdi"
    vdi.create(str(path), 16 * MiB)
    return path


# -- creation ---------------------------------------------------------------------------------

def test_dynamic_header_is_virtualbox_1_1_plus(tmp_path):
    path = tmp_path / "d.vdi"
    wanted = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    assert vdi.create(str(path), 100 * MiB, uuid=wanted) == wanted
    f = header_fields(path)
    assert f["text"] == b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(64, b"\0")
    assert (f["sig"], f["version"], f["header_size"], f["kind"], f["flags"]) == \
        (0xBEDA107F, 0x00010001, 400, 1, 0)
    assert f["off_bmap"] == 512 and f["off_data"] == MiB
    assert f["legacy"] == (0, 0, 0, 512) and f["lchs"] == (0, 0, 0, 512)
    assert (f["disk"], f["bs"], f["extra"], f["blocks"], f["allocated"]) == (100 * MiB, MiB, 0, 100, 0)
    assert f["u_create"] == wanted.bytes_le          # IPRT stores UUIDs little-endian
    assert any(f["u_modify"]) and not any(f["u_link"]) and not any(f["u_parent"])
    assert (block_map(path) == 0xFFFFFFFF).all()
    assert os.path.getsize(path) == MiB
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_fixed_image_allocates_every_block(tmp_path):
    path = tmp_path / "f.vdi"
    seen = []
    vdi.create(str(path), 8 * MiB + 512, variant="Fixed", progress=seen.append)
    assert seen == list(range(0, 101, 10))
    f = header_fields(path)
    assert f["kind"] == 2 and f["blocks"] == 9 and f["allocated"] == 9
    assert list(block_map(path)) == list(range(9))
    assert os.path.getsize(path) == f["off_data"] + 9 * MiB
    assert os.stat(path).st_blocks * 512 >= 9 * MiB      # really reserved, not a sparse file
    with vdi.open(str(path)) as img:
        assert img.variant == "Fixed" and img.size == 8 * MiB + 512
        assert img.read(0, 2 * MiB) == bytes(2 * MiB)


def test_standard_create_reports_progress_and_refuses_bad_requests(tmp_path):
    seen = []
    vdi.create(str(tmp_path / "a.vdi"), MiB, progress=seen.append)
    assert seen == list(range(0, 101, 10))
    for args, word in [((tmp_path / "a.vdi", MiB), "already exists"),
                       ((tmp_path / "b.vdi", 1000), "multiple of 512"),
                       ((tmp_path / "c.vdi", 0), "multiple of 512"),
                       ((tmp_path / "d.vdi", MiB, "Split2G"), "variant"),
                       ((tmp_path / "e.vdi", MiB, "Standard", 3000), "power of two")]:
        with pytest.raises(ImageError, match=word):
            vdi.create(str(args[0]), *args[1:])
    assert sorted(os.listdir(tmp_path)) == ["a.vdi"]      # no leftovers from refused creates


# -- reads and writes -------------------------------------------------------------------------

def test_random_io_matches_a_model_disk(disk):
    rng = random.Random(7)
    size = 16 * MiB
    model = bytearray(size)
    with vdi.open(str(disk)) as img:
        assert img.read(0, size) == bytes(size)
        for i in range(300):
            sectors = rng.choice([1, 8, 64, 2048, 2049, 4096])
            offset = rng.randrange(0, size // 512 - sectors + 1) * 512
            data = rng.randbytes(sectors * 512) if i % 5 else bytes(sectors * 512)
            img.write(offset, data)
            model[offset:offset + len(data)] = data
            if i % 50 == 0:
                assert img.read(0, size) == model
        assert img.read(0, size) == model
    with vdi.open(str(disk), readonly=True) as img:
        assert img.read(0, size) == model
        for _ in range(50):
            sectors = rng.randrange(1, 5000)
            offset = rng.randrange(0, size // 512 - sectors + 1) * 512
            assert img.read(offset, sectors * 512) == model[offset:offset + sectors * 512]


def test_allocation_appends_blocks_in_write_order(disk):
    with vdi.open(str(disk)) as img:
        img.write(5 * MiB + 4096, b"\x55" * 512)
        img.write(0, b"\xaa" * 512)
        img.write(15 * MiB + 1024, b"\xee" * (MiB - 1024))   # last block, to its end
        assert img.allocated_blocks == 3
    f = header_fields(disk)
    bmap = block_map(disk)
    assert f["allocated"] == 3
    assert bmap[5] == 0 and bmap[0] == 1 and bmap[15] == 2
    assert os.path.getsize(disk) == f["off_data"] + 3 * MiB
    with open(disk, "rb") as fh:
        fh.seek(f["off_data"])
        block5 = fh.read(MiB)
    assert block5 == bytes(4096) + b"\x55" * 512 + bytes(MiB - 4608)


def test_writing_zeros_to_unallocated_blocks_allocates_nothing(disk):
    with vdi.open(str(disk)) as img:
        img.write(0, bytes(3 * MiB))
        img.write(7 * MiB + 512, bytes(512))
        assert img.allocated_blocks == 0
        img.write(MiB - 512, bytes(512) + b"\x01" * 1024)   # zeros for block 0, data for block 1
        assert img.allocated_blocks == 1 and block_map(disk)[0] == 0xFFFFFFFF
        img.write(MiB, bytes(512))                            # zeros into an allocated block: stored
        assert img.read(MiB, 1024) == bytes(512) + b"\x01" * 512
    assert os.path.getsize(disk) == header_fields(disk)["off_data"] + MiB


def test_sequential_read_is_one_pread_per_contiguous_run(disk, monkeypatch):
    with vdi.open(str(disk)) as img:
        img.write(2 * MiB, b"\x11" * (6 * MiB))     # blocks 2..7 -> data blocks 0..5
        img.write(12 * MiB, b"\x22" * MiB)          # block 12 -> data block 6
        calls = []
        real = os.preadv
        monkeypatch.setattr(os, "preadv", lambda fd, bufs, off: calls.append(off) or real(fd, bufs, off))
        data = img.read(0, 16 * MiB)
        assert data == bytes(2 * MiB) + b"\x11" * (6 * MiB) + bytes(4 * MiB) + b"\x22" * MiB + bytes(3 * MiB)
        assert len(calls) == 2


def test_access_checks(disk):
    with vdi.open(str(disk)) as img:
        assert (img.size, img.sector_size, img.format) == (16 * MiB, 512, "VDI")
        for call in (lambda: img.read(100, 512), lambda: img.read(0, 100),
                     lambda: img.read(16 * MiB - 512, 1024), lambda: img.write(16 * MiB, b"\0" * 512),
                     lambda: img.write(3, b"\0" * 512)):
            with pytest.raises(ImageError, match="disk.vdi"):
                call()
    with vdi.open(str(disk), readonly=True) as img:
        with pytest.raises(ImageError, match="read-only"):
            img.write(0, b"x" * 512)


def test_new_modification_uuid_once_per_writable_open(disk):
    first = header_fields(disk)["u_modify"]
    with vdi.open(str(disk)) as img:
        assert header_fields(disk)["u_modify"] == first     # opening alone changes nothing
        img.write(0, b"a" * 512)
        second = header_fields(disk)["u_modify"]
        img.write(MiB, b"b" * 512)
        assert header_fields(disk)["u_modify"] == second != first
        assert img.modification_uuid.bytes_le == second
    with vdi.open(str(disk)) as img:
        img.write(0, b"c" * 512)
    assert header_fields(disk)["u_modify"] not in (first, second)


# -- corruption -------------------------------------------------------------------------------

def test_truncated_header(disk):
    os.truncate(disk, 300)
    expect_error(disk, "VERR_VD_VDI_INVALID_HEADER", "too short")


def test_bad_signature(disk):
    patch(disk, 64, "<I", 0x12345678)
    expect_error(disk, "bad signature", "0x12345678")


def test_bad_version(disk):
    patch(disk, 68, "<I", 0x00020000)
    expect_error(disk, "VERR_VD_VDI_UNSUPPORTED_VERSION", "2.0")


@pytest.mark.parametrize("offset,value,words", [
    (72, 200, ["header size"]),
    (76, 4, ["differencing"]),
    (76, 9, ["unknown type 9"]),
    (360, 4096, ["sector size"]),
    (376, 3 * MiB, ["block size"]),
    (380, 512, ["extra data"]),
    (384, 8, ["8 blocks", "do not fit"]),
    (388, 17, ["17 allocated"]),
    (368, 100, ["less than one sector"]),
    (340, 100, ["block map at offset 100"]),
    (344, 512, ["overlaps the block map"]),
    (340, 1 << 30, ["overlaps the block map"]),
    (344, 1 << 30, ["truncated"]),
])
def test_bad_header_fields(disk, offset, value, words):
    patch(disk, offset, "<I", value)
    expect_error(disk, *words)


def test_parent_uuid_is_refused(disk):
    patch(disk, 440, "<16s", uuid.uuid4().bytes_le)
    expect_error(disk, "differencing")


def test_map_entry_past_the_end_of_the_file(disk):
    with vdi.open(str(disk)) as img:
        img.write(0, b"x" * 512)
    patch(disk, 512 + 4 * 3, "<I", 7)         # block 3 -> data block 7, file holds only 1
    patch(disk, 388, "<I", 2)
    expect_error(disk, "truncated", "block 3")


def test_map_entry_beyond_the_block_count(disk):
    patch(disk, 512 + 4 * 2, "<I", 16)
    expect_error(disk, "block 2", "data block 16", "beyond")


def test_duplicate_map_entries(disk):
    with vdi.open(str(disk)) as img:
        img.write(0, b"x" * 512)
        img.write(MiB, b"y" * 512)
    patch(disk, 512 + 4 * 9, "<I", 1)
    expect_error(disk, "blocks 1 and 9", "data block 1")


def test_file_shorter_than_the_header_says(tmp_path):
    path = tmp_path / "fixed.vdi"
    vdi.create(str(path), 4 * MiB, variant="Fixed")
    os.truncate(path, os.path.getsize(path) - 512)
    expect_error(path, "truncated", "block 3")
    os.truncate(path, 1000)                       # now the block map itself is cut off
    expect_error(path, "truncated")


def test_errors_close_the_file(disk):
    patch(disk, 64, "<I", 0)
    for _ in range(3):
        expect_error(disk, "signature", readonly=False)   # would be "in use" if a lock leaked


# -- crashes ----------------------------------------------------------------------------------

class Crash(Exception):
    pass


def crash_after(monkeypatch, allowed_writes, torn=False):
    """Make vdi's writes fail after `allowed_writes` of them; with torn, the failing one lands half."""
    real = raw.pwrite_all
    count = [0]

    def pwrite_all(fd, path, buffers, offset):
        if count[0] == allowed_writes:
            if torn:
                flat = b"".join(bytes(b) for b in buffers)
                os.pwrite(fd, flat[:len(flat) // 2], offset)
            raise Crash()
        count[0] += 1
        real(fd, path, buffers, offset)
    monkeypatch.setattr(vdi, "pwrite_all", pwrite_all)


def crashed_write(path, monkeypatch, allowed, offset, data, torn=False):
    img = vdi.open(str(path))
    crash_after(monkeypatch, allowed, torn)
    try:
        img.write(offset, data)
        finished = True
    except Crash:
        finished = False
    monkeypatch.undo()
    os.close(img._fd)          # die without any further write, like a killed process
    return finished


def count_matches_map(path):
    return header_fields(path)["allocated"] == int((block_map(path) < 0xFFFFFFFE).sum())


@pytest.mark.parametrize("torn", [False, True])
def test_crash_at_every_step_inside_the_header_page(tmp_path, monkeypatch, torn):
    # Blocks whose map entry shares the header's 4 KiB page: the count and the entry are one
    # write, so every crash point leaves a consistent image holding old or new data. Writes go:
    # modification UUID, data, count+entry. Only the data write is torn: a write within one page
    # is never cut short by SIGKILL.
    for step in range(4):
        if torn and step != 1:
            continue
        path = tmp_path / f"s{step}.vdi"
        vdi.create(str(path), 64 * MiB)
        with vdi.open(str(path)) as img:
            img.write(0, b"\x01" * 512)
        finished = crashed_write(path, monkeypatch, step, 40 * MiB + 512, b"\x02" * 1024, torn)
        assert count_matches_map(path), step
        with vdi.open(str(path), readonly=True) as img:
            got = img.read(40 * MiB + 512, 1024)
            assert got in (bytes(1024), b"\x02" * 1024) and (got != bytes(1024)) == finished
            assert img.read(0, 512) == b"\x01" * 512


def test_count_and_far_entries_are_still_one_write(tmp_path, monkeypatch):
    # Block 2000's entry is in the map's second page; the count and the entry still go out as one
    # pwrite starting at the count, so the only crash points are before or after it.
    path = tmp_path / "mid.vdi"
    vdi.create(str(path), 3000 * MiB)
    for step in range(3):
        assert crashed_write(path, monkeypatch, step, 2000 * MiB, b"\x02" * 512) is False
        assert count_matches_map(path)
    assert crashed_write(path, monkeypatch, 3, 2000 * MiB, b"\x02" * 512) is True
    assert count_matches_map(path) and block_map(path)[2000] == 0


def test_crash_between_count_and_map_is_repaired_on_open(tmp_path, monkeypatch):
    # Block 90000's entry lies past SPAN: the count goes first, then the entry.
    path = tmp_path / "big.vdi"
    vdi.create(str(path), 100000 * MiB)
    with vdi.open(str(path)) as img:
        img.write(0, b"\x01" * 512)
    # writes: modification UUID, data, count | entry
    assert not crashed_write(path, monkeypatch, 3, 90000 * MiB, b"\x02" * 512)
    f = header_fields(path)
    assert f["allocated"] == 2 and int((block_map(path) < 0xFFFFFFFE).sum()) == 1
    with vdi.open(str(path), readonly=True) as img:          # readable as is, untouched
        assert img.read(90000 * MiB, 512) == bytes(512)
    assert header_fields(path)["allocated"] == 2
    with vdi.open(str(path)) as img:                         # a writer repairs the count
        assert count_matches_map(path)
        img.write(1000 * MiB, b"\x03" * 512)                 # reuses the orphaned data block 1
        assert img.read(1000 * MiB, 1024) == b"\x03" * 512 + bytes(512)
    assert block_map(path)[1000] == 1 and count_matches_map(path)


def test_holes_in_the_data_area_are_reused_first(disk):
    with vdi.open(str(disk)) as img:
        for block in range(3):
            img.write(block * MiB, bytes([block + 1]) * 512)
    patch(disk, 512 + 4, "<I", 0xFFFFFFFF)      # drop block 1 -> data block 1 unreferenced
    patch(disk, 388, "<I", 2)
    with vdi.open(str(disk)) as img:
        img.write(9 * MiB, b"\x09" * 512)
        assert img.read(9 * MiB, 1024) == b"\x09" * 512 + bytes(512)   # stale bytes overwritten
    assert block_map(disk)[9] == 1 and os.path.getsize(disk) == header_fields(disk)["off_data"] + 3 * MiB


def test_random_damage_gives_image_errors_only(tmp_path):
    # Whatever a damaged header or map holds, opening gives a usable image or one ImageError line.
    pristine = tmp_path / "pristine.vdi"
    vdi.create(str(pristine), 40 * MiB)
    with vdi.open(str(pristine)) as img:
        for block in (0, 3, 39):
            img.write(block * MiB, b"\x11" * 4096)
    original = pristine.read_bytes()
    rng = random.Random(99)
    path = tmp_path / "damaged.vdi"
    outcomes = {"opened": 0, "refused": 0}
    for _ in range(400):
        data = bytearray(original)
        for _ in range(rng.choice([1, 1, 2, 4])):
            where = rng.choice([rng.randrange(64, 472), rng.randrange(512, 512 + 4 * 40)])
            data[where] = rng.randrange(256)
        if rng.random() < 0.1:
            data = data[:rng.randrange(len(data))]
        path.write_bytes(bytes(data))
        try:
            with vdi.open(str(path)) as img:
                img.read(0, min(img.size, 4 * MiB))
                img.read(img.size - 512, 512)
                img.write(img.size - 512, b"\x22" * 512)
            outcomes["opened"] += 1
        except ImageError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            outcomes["refused"] += 1
    assert outcomes["opened"] and outcomes["refused"]
