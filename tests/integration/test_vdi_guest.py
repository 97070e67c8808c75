"""Acceptance (issue 3, item 3): a Linux guest partitions and formats a dynamic VDI on our VMM
(software accelerator), writes a file, and reads it back in a second boot; qemu-img is the oracle
for the images in between. The same for a VDI that `qemu-img create -f vdi` made.

Two boots serve the whole module (a boot to GUEST-READY takes about a minute on tcg). Both disks
are attached to both boots: our VDI as primary master, QEMU's as primary slave, the test ISO in
the secondary master. Linux probes the two ATA ports in parallel, so /dev/sdX names are looked up
in sysfs by ATA port and unit at each boot.

- first boot: on each disk, busybox fdisk writes an MBR with one Linux partition, mkfs.ext2
  formats it and a few hundred KiB of numbered lines go into a file (large requests: the bus-master
  DMA and multi-sector paths); the guest drops its caches, reads the file back and powers off with
  `poweroff -f`, after which both VM processes end by themselves;
- host: `qemu-img check` finds no errors; `qemu-img convert -O raw` holds the partition table,
  an ext2 file system that e2fsck -fn accepts, and the file's exact bytes (read with a minimal
  ext2 reader below);
- second boot: the guest mounts both partitions, checks the file's SHA-256 and adds a second file;
  qemu-img check and the raw bytes again afterwards.

The whole module runs within MODULE_BUDGET seconds (every wait is clamped to what is left)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from services.demo.linux_iso import linux_iso
from services.images.image import create_disk
from tests.support.serial_guest import Budget, GuestVm, qemu_img

MODULE_BUDGET = 330.0       # seconds for the whole module: two boots of ~60 s plus the guest work
DISK_MIB = 64
SECTOR = 512

# Image -> its unit on the primary ATA channel (ata1 in the guest): master 0, slave 1. The first is
# made by our create_disk, the second by qemu-img; both are dynamic VDIs of DISK_MIB MiB.
DISKS = {"ours": 0, "qemu": 1}
# Each block device's sysfs path names its ATA port and SCSI target: .../ata1/host0/target0:0:1/...
LIST_DISKS = "for d in /sys/block/sd*; do echo disk: ${d##*/} $(readlink -f $d/device); done"
DATA_LINES = 9000           # 9000 lines of 52 bytes: 468000 bytes (457 KiB, not a block multiple)
MORE_LINES = 3000


def disk_names(listing: str) -> dict[str, str]:
    """Image -> the guest's block device name (sda, sdb...), from LIST_DISKS's output."""
    units = {}
    for name, path in re.findall(r"^disk: (sd[a-z]+) (\S+)$", listing, re.M):
        found = re.search(r"/ata1/host\d+/target\d+:0:(\d+)/", path)
        if found:
            units[int(found.group(1))] = name
    names = {disk: units.get(unit) for disk, unit in DISKS.items()}
    assert all(names.values()), f"the primary master and slave are not both in the guest:\n{listing}"
    return names


def lines_awk(tag: str, count: int) -> str:
    """The awk program the guest runs to make a file; expected_data() makes the same bytes."""
    return (f"awk 'BEGIN {{ for (i = 0; i < {count}; i++) "
            f"printf \"headbox-vdi %-6s line %08d of %08d ......\\n\", \"{tag}\", i, {count} }}'")


def expected_data(tag: str, count: int) -> bytes:
    return b"".join(b"headbox-vdi %-6s line %08d of %08d ......\n" % (tag.encode(), i, count)
                    for i in range(count))


# -- a minimal ext2 reader (what busybox mke2fs makes: no extents) --------------------------------


class Ext2:
    def __init__(self, fs: bytes):
        self.fs = fs
        sb = fs[1024:2048]
        magic, = struct.unpack_from("<H", sb, 56)
        if magic != 0xEF53:
            raise AssertionError(f"no ext2 superblock (magic {magic:#06x})")
        self.block_size = 1024 << struct.unpack_from("<I", sb, 24)[0]
        self.inodes_per_group, = struct.unpack_from("<I", sb, 40)
        revision, = struct.unpack_from("<I", sb, 76)
        self.inode_size = struct.unpack_from("<H", sb, 88)[0] if revision >= 1 else 128
        self.incompat = struct.unpack_from("<I", sb, 96)[0] if revision >= 1 else 0
        if self.incompat & 0x40:
            raise AssertionError("the file system uses extents; this reader knows ext2 block maps only")
        self.label = sb[120:136].rstrip(b"\0").decode()
        first_data_block, = struct.unpack_from("<I", sb, 20)
        self.gdt = (first_data_block + 1) * self.block_size

    def block(self, number: int) -> bytes:
        if number == 0:
            return bytes(self.block_size)   # a hole
        return self.fs[number * self.block_size:(number + 1) * self.block_size]

    def inode(self, number: int) -> tuple[int, int, tuple[int, ...]]:
        group, index = divmod(number - 1, self.inodes_per_group)
        table, = struct.unpack_from("<I", self.fs, self.gdt + group * 32 + 8)
        raw = self.fs[table * self.block_size + index * self.inode_size:][:self.inode_size]
        mode, size = struct.unpack_from("<H2xI", raw, 0)
        if mode & 0xF000 == 0x8000:
            size |= struct.unpack_from("<I", raw, 108)[0] << 32
        return mode, size, struct.unpack_from("<15I", raw, 40)

    def _blocks(self, number: int, depth: int):
        if depth == 0:
            yield number
            return
        for entry in struct.unpack(f"<{self.block_size // 4}I", self.block(number)):
            yield from self._blocks(entry, depth - 1)

    def read_inode(self, number: int) -> bytes:
        mode, size, pointers = self.inode(number)
        out = bytearray()
        order = [(p, 0) for p in pointers[:12]] + [(pointers[12], 1), (pointers[13], 2), (pointers[14], 3)]
        for pointer, depth in order:
            if len(out) >= size:
                break
            if depth and pointer == 0:   # a hole as large as the whole tree under the pointer
                span = self.block_size * (self.block_size // 4) ** depth
                out += bytes(min(span, size - len(out)))
                continue
            for block in self._blocks(pointer, depth):
                out += self.block(block)
                if len(out) >= size:
                    break
        return bytes(out[:size])

    def listdir(self, number: int = 2) -> dict[str, int]:
        data, entries, pos = self.read_inode(number), {}, 0
        while pos + 8 <= len(data):
            inode, rec_len, name_len = struct.unpack_from("<IHH", data, pos)
            if self.incompat & 0x2:     # filetype: the name length is one byte
                name_len &= 0xFF
            if rec_len < 8:
                raise AssertionError(f"a broken directory entry at {pos}")
            if inode:
                entries[data[pos + 8:pos + 8 + name_len].decode()] = inode
            pos += rec_len
        return entries

    def read(self, name: str) -> bytes:
        entries = self.listdir()
        if name not in entries:
            raise AssertionError(f"no /{name} in the file system's root directory ({sorted(entries)})")
        return self.read_inode(entries[name])


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def budget():
    return Budget(MODULE_BUDGET)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A private runtime folder (XDG_RUNTIME_DIR) for the VM's sockets, here and in the VM."""
    tmp = tmp_path_factory.mktemp("vdi-guest")
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(tmp)
    yield tmp
    if old is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = old


@pytest.fixture(scope="module")
def images(workdir) -> dict[str, Path]:
    tool = qemu_img()
    ours = workdir / "ours.vdi"
    create_disk(str(ours), DISK_MIB)                 # dynamic ("Standard") is the default variant
    theirs = workdir / "qemu.vdi"
    made = subprocess.run([tool, "create", "-f", "vdi", str(theirs), f"{DISK_MIB}M"],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    for path in (ours, theirs):
        # A dynamic image holds its header and block map only (our data area starts at 1 MiB).
        assert path.stat().st_size <= 1 << 20, f"{path.name} is not a dynamic image"
    return {"ours": ours, "qemu": theirs}


def vm_drives(images: dict[str, Path]) -> list[str]:
    return [f"0:0:hdd:{images['ours']}", f"0:1:hdd:{images['qemu']}", f"1:0:dvd:{linux_iso()}"]


class Session:
    """Runs the guest steps of one boot; any failure becomes pytest.fail with the VM's diagnostics."""

    def __init__(self, name: str, images, workdir, budget):
        self.vm = GuestVm(name, vm_drives(images), workdir, budget)
        self.budget = budget

    def __enter__(self) -> GuestVm:
        if self.budget.spent():
            pytest.fail(f"the module's time budget ({MODULE_BUDGET:.0f} s) is spent before the "
                        f"{self.vm.name} boot", pytrace=False)
        try:
            self.vm.start()
        except Exception as error:
            self.__exit__(type(error), error, None)
        return self.vm

    def __exit__(self, kind, error, _tb):
        try:
            if isinstance(error, Exception):
                pytest.fail(f"{error}\n{self.vm.diagnostics()}", pytrace=False)
        finally:
            self.vm.close()
        return False


def sha256_of(output: str, path: str) -> str:
    """The SHA-256 the guest printed for `path`; when it printed several, all must agree."""
    sums = re.findall(r"^([0-9a-f]{64})\s+" + re.escape(path) + r"\s*$", output, re.M)
    assert sums, f"no sha256sum line for {path} in:\n{output}"
    assert len(set(sums)) == 1, f"the guest computed different SHA-256 sums of {path}:\n{output}"
    return sums[0]


@pytest.fixture(scope="module")
def first_boot(images, workdir, budget):
    """Partitions, formats and fills both disks; returns what the guest said about each."""
    report = {"disks": {}}
    with Session("first", images, workdir, budget) as vm:
        vm.boot()
        report["info"] = vm.run("guest-info | grep -e '^block:' -e '^pci: .*:01.1'")
        report["ata"] = vm.run("for d in /sys/class/ata_device/dev*; do "
                               "echo ata: ${d##*/} $(cat $d/class) $(cat $d/xfer_mode); done")
        report["names"] = names = disk_names(vm.run(LIST_DISKS))
        for disk, dev in names.items():
            step = {}
            start = time.monotonic()
            step["fdisk"] = vm.run(rf"printf 'o\nn\np\n1\n\n\nw\n' | fdisk /dev/{dev}")
            step["table"] = vm.run(f"fdisk -l /dev/{dev}; cat /sys/block/{dev}/{dev}1/start "
                                   f"/sys/block/{dev}/{dev}1/size; ls -l /dev/{dev}1")
            step["mkfs"] = vm.run(f"mkfs.ext2 -q -L hbx-{disk} /dev/{dev}1")
            vm.run(f"mkdir -p /mnt/{disk} && mount -t ext2 /dev/{dev}1 /mnt/{disk}")
            vm.run(f"{lines_awk(disk, DATA_LINES)} > /mnt/{disk}/data.txt && "
                   f"echo hello-from-{disk} > /mnt/{disk}/hello.txt && sync")
            # Twice from the page cache: a CPU glitch gives two different sums, memory that
            # changed under the guest (a stray DMA write) two equal wrong ones.
            step["written"] = vm.run(f"ls -l /mnt/{disk}; sha256sum /mnt/{disk}/data.txt; "
                                     f"sha256sum /mnt/{disk}/data.txt")
            vm.run(f"umount /mnt/{disk} && echo 3 > /proc/sys/vm/drop_caches && "
                   f"mount -t ext2 -o ro /dev/{dev}1 /mnt/{disk}")
            step["reread"] = vm.run(f"sha256sum /mnt/{disk}/data.txt; cat /mnt/{disk}/hello.txt; "
                                    f"umount /mnt/{disk}")
            step["seconds"] = time.monotonic() - start
            report["disks"][disk] = step
        vm.run("sync")
        report["exit_codes"] = vm.poweroff()
        report["timings"] = dict(vm.timings)
    print(f"\nfirst boot: GUEST-READY after {report['timings']['ready']:.1f} s, powered off after "
          f"{report['timings']['poweroff']:.1f} s; guest work per disk: "
          + ", ".join(f"{d} {s['seconds']:.1f} s" for d, s in report["disks"].items()))
    print(report["ata"].strip())
    return report


@pytest.fixture(scope="module")
def second_boot(first_boot, images, workdir, budget):
    """Mounts both partitions again, checks the file and adds a second one to each."""
    report = {"disks": {}}
    with Session("second", images, workdir, budget) as vm:
        vm.boot()
        report["names"] = names = disk_names(vm.run(LIST_DISKS))
        for disk, dev in names.items():
            step = {}
            vm.run(f"mkdir -p /mnt/{disk} && mount -t ext2 /dev/{dev}1 /mnt/{disk}")
            step["read"] = vm.run(f"ls -l /mnt/{disk}; sha256sum /mnt/{disk}/data.txt; "
                                  f"cat /mnt/{disk}/hello.txt")
            vm.run(f"{lines_awk(disk + '+', MORE_LINES)} > /mnt/{disk}/more.txt && sync")
            vm.run(f"umount /mnt/{disk} && echo 3 > /proc/sys/vm/drop_caches && "
                   f"mount -t ext2 -o ro /dev/{dev}1 /mnt/{disk}")
            step["more"] = vm.run(f"sha256sum /mnt/{disk}/more.txt /mnt/{disk}/data.txt; umount /mnt/{disk}")
            report["disks"][disk] = step
        report["exit_codes"] = vm.poweroff()
        report["timings"] = dict(vm.timings)
    print(f"\nsecond boot: GUEST-READY after {report['timings']['ready']:.1f} s, powered off after "
          f"{report['timings']['poweroff']:.1f} s")
    return report


# -- host-side checks ----------------------------------------------------------------------------


def check_image(path: Path, tmp: Path, files: dict[str, bytes], label: str) -> dict:
    """qemu-img check is clean; the raw image holds an MBR with one Linux partition whose ext2 file
    system (e2fsck -fn agrees) has `files` in its root directory. Returns the partition's place."""
    tool = qemu_img()
    checked = subprocess.run([tool, "check", "-f", "vdi", str(path)], capture_output=True, text=True)
    verdict = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0 and "No errors were found" in verdict, f"qemu-img check {path.name}:\n{verdict}"
    info = json.loads(subprocess.run([tool, "info", "--output=json", str(path)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "vdi" and info["virtual-size"] == DISK_MIB << 20, info
    raw_path = tmp / f"{path.stem}.raw"
    converted = subprocess.run([tool, "convert", "-f", "vdi", "-O", "raw", str(path), str(raw_path)],
                               capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr
    try:
        raw = raw_path.read_bytes()
        assert len(raw) == DISK_MIB << 20
        assert raw[510:512] == b"\x55\xaa", f"{path.name}: no MBR signature"
        status, kind, start, sectors = struct.unpack_from("<B3xB3xII", raw, 446)
        assert kind == 0x83 and start > 0 and start + sectors <= len(raw) // SECTOR, \
            f"{path.name}: partition 1 is type {kind:#x} at {start}+{sectors}"
        assert raw[446 + 16:510] == bytes(48), f"{path.name}: more than one partition"
        partition = raw[start * SECTOR:(start + sectors) * SECTOR]
        fs = Ext2(partition)
        assert fs.label == f"hbx-{label}"
        for name, data in files.items():
            assert fs.read(name) == data, f"{path.name}: /{name} differs from what the guest wrote"
            assert data[:4096] in partition
        fsck = shutil.which("e2fsck") or shutil.which("e2fsck", path="/sbin:/usr/sbin")
        if fsck:
            part_path = tmp / f"{path.stem}.part"
            part_path.write_bytes(partition)
            result = subprocess.run([fsck, "-fn", str(part_path)], capture_output=True, text=True)
            part_path.unlink()
            assert result.returncode == 0, f"e2fsck -fn on {path.name}'s partition:\n{result.stdout}{result.stderr}"
        else:
            print("e2fsck is not installed: the file system's consistency is not checked")
    finally:
        raw_path.unlink(missing_ok=True)
    return {"start": start, "sectors": sectors, "file_size": path.stat().st_size}


def test_first_boot_partitions_formats_and_writes_both_disks(first_boot):
    info = first_boot["info"]
    for dev in first_boot["names"].values():
        assert f"block: {dev} sectors={DISK_MIB * 2048} " in info, info
    # libata drives both disks (primary master and slave) with bus-master DMA (multiword DMA 2 on
    # the PIIX3, which has no Ultra DMA), not PIO.
    for unit in ("dev1.0", "dev1.1"):
        assert re.search(rf"^ata: {unit} ata XFER_\w*DMA", first_boot["ata"], re.M), first_boot["ata"]
    for disk, dev in first_boot["names"].items():
        step = first_boot["disks"][disk]
        assert "The partition table has been altered" in step["fdisk"] or "calling ioctl" in step["fdisk"].lower(), \
            step["fdisk"]
        assert f"/dev/{dev}1" in step["table"], step["table"]
        want = hashlib.sha256(expected_data(disk, DATA_LINES)).hexdigest()
        assert sha256_of(step["written"], f"/mnt/{disk}/data.txt") == want, step["written"]
        assert sha256_of(step["reread"], f"/mnt/{disk}/data.txt") == want, step["reread"]
        assert f"hello-from-{disk}" in step["reread"]
    assert first_boot["exit_codes"] == (0, 0), \
        f"vCPU and device process exit codes after poweroff -f: {first_boot['exit_codes']}"


@pytest.mark.parametrize("disk", DISKS)
def test_image_after_the_first_boot(first_boot, images, disk, tmp_path):
    place = check_image(images[disk], tmp_path, {"data.txt": expected_data(disk, DATA_LINES),
                                                 "hello.txt": f"hello-from-{disk}\n".encode()}, disk)
    dev = first_boot["names"][disk]
    table = first_boot["disks"][disk]["table"].split()
    # The guest's view of the partition (sysfs start and size) is what the host finds in the MBR.
    assert f"{place['start']}" in table and f"{place['sectors']}" in table, (place, table)
    assert place["file_size"] < (DISK_MIB << 20) // 2, \
        f"{images[disk].name} grew to {place['file_size']} bytes: a dynamic image should stay sparse"
    print(f"{disk} ({dev}): partition at {place['start']}+{place['sectors']}, image {place['file_size']} bytes")


def test_second_boot_reads_the_files_back(second_boot):
    for disk in DISKS:
        step = second_boot["disks"][disk]
        want = hashlib.sha256(expected_data(disk, DATA_LINES)).hexdigest()
        assert sha256_of(step["read"], f"/mnt/{disk}/data.txt") == want, step["read"]
        assert f"hello-from-{disk}" in step["read"]
        more = hashlib.sha256(expected_data(disk + "+", MORE_LINES)).hexdigest()
        assert sha256_of(step["more"], f"/mnt/{disk}/more.txt") == more, step["more"]
        assert sha256_of(step["more"], f"/mnt/{disk}/data.txt") == want, step["more"]
    assert second_boot["exit_codes"] == (0, 0), second_boot["exit_codes"]


@pytest.mark.parametrize("disk", DISKS)
def test_image_after_the_second_boot(second_boot, images, disk, tmp_path):
    check_image(images[disk], tmp_path, {"data.txt": expected_data(disk, DATA_LINES),
                                         "hello.txt": f"hello-from-{disk}\n".encode(),
                                         "more.txt": expected_data(disk + "+", MORE_LINES)}, disk)
