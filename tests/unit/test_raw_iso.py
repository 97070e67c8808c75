"""Raw disk images and ISO CD/DVD images: sizes, reads and writes, read-only rules, and the checks
that refuse a file that is not what it claims to be."""

import os
import shutil
import subprocess

import pytest

from services.images import iso, raw
from services.images.backend import ImageError

MiB = 1 << 20


def make_iso(path, sectors=40):
    """A minimal ISO 9660 image: a primary volume descriptor in sector 16, a terminator in 17."""
    data = bytearray(sectors * 2048)
    data[16 * 2048:16 * 2048 + 7] = b"\x01CD001\x01"
    data[17 * 2048:17 * 2048 + 7] = b"\xffCD001\x01"
    for n in range(18, sectors):
        data[n * 2048:n * 2048 + 4] = n.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return bytes(data)


def one_line(info, path):
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


# -- raw --------------------------------------------------------------------------------------

def test_raw_read_write_roundtrip(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(MiB))
    with raw.open(str(path)) as img:
        assert (img.size, img.sector_size, img.readonly, img.format) == (MiB, 512, False, "RAW")
        img.write(4096, b"\xab" * 1024)
        img.write(MiB - 512, b"\xcd" * 512)
        img.flush()
        assert img.read(4096 - 512, 2048) == bytes(512) + b"\xab" * 1024 + bytes(512)
        assert img.read(MiB - 512, 512) == b"\xcd" * 512
        with pytest.raises(ImageError, match="past the end"):
            img.read(MiB - 512, 1024)
        with pytest.raises(ImageError, match="not aligned"):
            img.write(1, b"x" * 512)
    data = path.read_bytes()
    assert data[4096:5120] == b"\xab" * 1024 and data[-512:] == b"\xcd" * 512


def test_raw_read_only(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(4096))
    with raw.open(str(path), readonly=True) as img:
        with pytest.raises(ImageError, match="read-only"):
            img.write(0, b"x" * 512)


@pytest.mark.parametrize("size,word", [(1000, "multiple of 512"), (0, "empty")])
def test_raw_size_must_be_whole_sectors(tmp_path, size, word):
    path = tmp_path / "odd.img"
    path.write_bytes(bytes(size))
    with pytest.raises(ImageError, match=word) as info:
        raw.open(str(path))
    one_line(info, path)


def test_raw_create_is_fixed_only(tmp_path):
    seen = []
    raw.create(str(tmp_path / "f.img"), 4 * MiB, progress=seen.append)
    assert seen == list(range(0, 101, 10))
    st = os.stat(tmp_path / "f.img")
    assert st.st_size == 4 * MiB and st.st_blocks * 512 >= 4 * MiB
    with pytest.raises(ImageError, match="dynamic"):
        raw.create(str(tmp_path / "s.img"), 4 * MiB, "Standard")
    assert not (tmp_path / "s.img").exists()


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ImageError, match="VERR_FILE_NOT_FOUND") as info:
        raw.open(str(tmp_path / "nope.img"))
    one_line(info, tmp_path / "nope.img")
    with pytest.raises(ImageError, match="directory"):
        raw.open(str(tmp_path))
    if os.geteuid() != 0:   # root reads anything
        locked = tmp_path / "locked.img"
        locked.write_bytes(bytes(512))
        locked.chmod(0)
        with pytest.raises(ImageError, match="permission denied"):
            raw.open(str(locked), readonly=True)


# -- ISO --------------------------------------------------------------------------------------

def test_iso_reads_2048_byte_sectors(tmp_path):
    path = tmp_path / "cd.iso"
    data = make_iso(path)
    with iso.open(str(path)) as img:
        assert (img.size, img.sector_size, img.readonly, img.format) == (len(data), 2048, True, "ISO")
        assert img.read(16 * 2048, 4096) == data[16 * 2048:18 * 2048]
        assert img.read(20 * 2048, 2048)[:4] == (20).to_bytes(4, "little")
        with pytest.raises(ImageError, match="not aligned"):
            img.read(512, 2048)
        with pytest.raises(ImageError, match="past the end"):
            img.read(len(data) - 2048, 4096)
        with pytest.raises(ImageError, match="read-only"):
            img.write(0, bytes(2048))


def test_iso_size_must_be_whole_cd_sectors(tmp_path):
    path = tmp_path / "cut.iso"
    make_iso(path)
    with open(path, "ab") as f:
        f.write(bytes(512))
    with pytest.raises(ImageError, match="2048-byte") as info:
        iso.open(str(path))
    one_line(info, path)


def test_iso_needs_the_cd001_descriptor(tmp_path):
    path = tmp_path / "fake.iso"
    path.write_bytes(bytes(40 * 2048))
    with pytest.raises(ImageError, match="CD001") as info:
        iso.open(str(path))
    one_line(info, path)
    path.write_bytes(bytes(4096))
    with pytest.raises(ImageError, match="too small"):
        iso.open(str(path))


def test_iso_made_by_xorriso(tmp_path):
    xorriso = shutil.which("xorriso")
    if not xorriso:
        pytest.fail("xorriso is not installed (apt-get install xorriso): this test needs a real ISO",
                    pytrace=False)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "HELLO.TXT").write_bytes(b"hello from the cd\n" * 200)
    out = tmp_path / "real.iso"
    subprocess.run([xorriso, "-as", "mkisofs", "-quiet", "-V", "HEADBOX", "-o", str(out), str(tree)],
                   check=True, capture_output=True)
    data = out.read_bytes()
    with iso.open(str(out)) as img:
        assert img.size == len(data)
        assert img.read(0, len(data)) == data
        assert img.read(16 * 2048, 2048)[40:47] == b"HEADBOX"     # volume identifier
