"""open_image and create_disk: the format chosen by content, the one-line errors, the locks that
keep two VMs off one image, and VBoxManage's progress steps."""

import os
import subprocess
import sys
import textwrap

import pytest

from services.images import image, vdi
from services.images.backend import ImageError
from services.images.iso import IsoImage
from services.images.raw import RawImage
from services.images.vdi import VdiImage

MiB = 1 << 20


def make_iso(path):
    data = bytearray(20 * 2048)
    data[16 * 2048:16 * 2048 + 6] = b"\x01CD001"
    path.write_bytes(bytes(data))


def message_of(call, path):
    with pytest.raises(ImageError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_format_by_content(tmp_path):
    vdi.create(str(tmp_path / "named-oddly.img"), MiB)
    (tmp_path / "disk.raw").write_bytes(bytes(MiB))
    make_iso(tmp_path / "cd.bin")
    with image.open_image(str(tmp_path / "named-oddly.img")) as img:
        assert isinstance(img, VdiImage) and img.size == MiB
    with image.open_image(str(tmp_path / "disk.raw")) as img:
        assert isinstance(img, RawImage) and not img.readonly
    with image.open_image(str(tmp_path / "cd.bin"), kind="dvd") as img:
        assert isinstance(img, IsoImage) and img.readonly and img.sector_size == 2048


def test_wrong_kind_of_image(tmp_path):
    make_iso(tmp_path / "cd.iso")
    vdi.create(str(tmp_path / "d.vdi"), MiB)
    (tmp_path / "r.img").write_bytes(bytes(MiB))
    assert "CD/DVD image" in message_of(lambda: image.open_image(str(tmp_path / "cd.iso")), "cd.iso")
    assert "VDI" in message_of(lambda: image.open_image(str(tmp_path / "d.vdi"), "dvd"), "d.vdi")
    assert "CD001" in message_of(lambda: image.open_image(str(tmp_path / "r.img"), "dvd"), "r.img")
    assert "hdd or dvd" in message_of(lambda: image.open_image(str(tmp_path / "r.img"), "floppy"), "r.img")


def test_missing_and_corrupt_files(tmp_path):
    assert "VERR_FILE_NOT_FOUND" in message_of(
        lambda: image.open_image(str(tmp_path / "gone.vdi")), tmp_path / "gone.vdi")
    broken = tmp_path / "broken.vdi"
    vdi.create(str(broken), MiB)
    with open(broken, "r+b") as f:
        f.seek(64)
        f.write(b"\0\0\0\0")
    # A .vdi with a damaged signature is reported as a damaged VDI, never opened as a raw disk.
    assert "signature" in message_of(lambda: image.open_image(str(broken)), broken)
    tiny = tmp_path / "tiny.vdi"
    tiny.write_bytes(b"<<< Oracle VM VirtualBox Disk Image >>>\n")
    assert "too short" in message_of(lambda: image.open_image(str(tiny)), tiny)
    odd = tmp_path / "odd.img"
    odd.write_bytes(bytes(777))
    assert "multiple of 512" in message_of(lambda: image.open_image(str(odd)), odd)


def test_two_writers_conflict(tmp_path):
    path = str(tmp_path / "d.vdi")
    vdi.create(path, MiB)
    first = image.open_image(path)
    msg = message_of(lambda: image.open_image(path), path)
    assert msg == f"'{path}' is already in use by another running VM"
    msg = message_of(lambda: image.open_image(path, readonly=True), path)
    assert "already in use" in msg
    first.close()
    image.open_image(path).close()       # the lock went with the file


def test_readers_share_and_exclude_writers(tmp_path):
    path = str(tmp_path / "d.img")
    (tmp_path / "d.img").write_bytes(bytes(MiB))
    a = image.open_image(path, readonly=True)
    b = image.open_image(path, readonly=True)
    assert "already in use" in message_of(lambda: image.open_image(path), path)
    a.close()
    b.close()
    image.open_image(path).close()


def test_dvd_images_are_shared(tmp_path):
    path = str(tmp_path / "cd.iso")
    make_iso(tmp_path / "cd.iso")
    a = image.open_image(path, "dvd")
    b = image.open_image(path, "dvd", readonly=False)     # a CD is read-only whatever is asked
    assert b.readonly
    a.close()
    b.close()


def test_lock_holds_across_processes(tmp_path):
    path = str(tmp_path / "d.vdi")
    vdi.create(path, MiB)
    child = textwrap.dedent(f"""
        import sys
        from services.images import image
        from services.images.backend import ImageError
        try:
            image.open_image({path!r}, readonly=True)
        except ImageError as exc:
            print(exc)
            sys.exit(3)
    """)
    with image.open_image(path):
        result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == f"'{path}' is already in use by another running VM"


def test_create_disk_vdi_and_raw(tmp_path):
    for fmt, variant in [("VDI", "Standard"), ("VDI", "Fixed"), ("RAW", "Fixed")]:
        seen = []
        path = str(tmp_path / f"{fmt}-{variant}")
        result = image.create_disk(path, 3, fmt, variant, progress=seen.append)
        assert seen == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100], (fmt, variant)
        with image.open_image(path) as img:
            assert img.size == 3 * MiB and img.format == fmt
            if fmt == "VDI":
                assert img.uuid == result and img.variant == variant
            else:
                assert result is None
            img.write(2 * MiB, b"\x42" * 512)
            assert img.read(2 * MiB, 1024) == b"\x42" * 512 + bytes(512)


def test_create_disk_refusals(tmp_path):
    path = str(tmp_path / "d.vdi")
    image.create_disk(path, 1)
    assert "VERR_ALREADY_EXISTS" in message_of(lambda: image.create_disk(path, 1), path)
    other = str(tmp_path / "x.vmdk")
    assert "format 'VMDK'" in message_of(lambda: image.create_disk(other, 1, "VMDK"), other)
    assert "positive" in message_of(lambda: image.create_disk(other, 0), other)
    assert "dynamic" in message_of(lambda: image.create_disk(other, 1, "RAW"), other)
    nowhere = str(tmp_path / "no" / "such" / "dir.vdi")
    assert "Could not create" in message_of(lambda: image.create_disk(nowhere, 1), nowhere)
    assert sorted(os.listdir(tmp_path)) == ["d.vdi"]
