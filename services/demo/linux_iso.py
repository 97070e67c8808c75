"""Builds the built-in demo guest ISO (also the test suite's guest) from Debian's packages, cached.

`linux_iso()` returns a BIOS El Torito ISO made with grub-mkrescue: Debian's stable kernel (downloaded
with apt-get download, unpacked with dpkg -x, never installed) and an initramfs with static busybox,
the few modules a PC guest needs, and the scripts in guest_init/. Results live in
<repo>/build/guests, keyed by a hash of every build input, so a second call costs milliseconds.

What the guest does (tests rely on these):
- GRUB prints GRUB-LINUX, GRUB-INITRD and GRUB-BOOT on serial and VGA (timeout=0, no menu);
- /init prints GUEST-READY on /dev/console (ttyS0), /dev/ttyS0 and /dev/tty0 once modules are
  loaded and acpid runs; then busybox init keeps a root shell with prompt "guest# " on ttyS0 and
  on tty1 (tty1 shows the "Headbox demo guest" banner first);
- the ACPI power button prints GUEST-POWEROFF, syncs, remounts read-only and powers off;
- /bin/guest-info prints "key: value" facts (block:, pci:, input:, serial:, modules:, mount:);
- /bin/guest-ticks prints "TICK <n> <uptime>" once a second; /bin/guest-soak SECONDS runs a
  self-checking system-call, disk and interrupt workload ("SOAK-ERR ...", "SOAK-DONE ...");
- mkfs.ext2 (busybox mke2fs) and ext4/ext2 mounting work on an IDE disk (/dev/sda);
- the e1000, pcnet32 and virtio-net drivers are loaded; `udhcpc -i eth0` configures the card
  from the lease and prints "DHCP-LEASE eth0 <ip> router <gw> dns <servers>" on the console;
  busybox's wget, httpd (serving /www), nslookup and ping are there."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from pathlib import Path

GUESTS_DIR = Path(__file__).resolve().parent
INIT_DIR = GUESTS_DIR / "guest_init"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / "build" / "guests"
DEBS_DIR = CACHE_DIR / "debs"

KERNEL_META_PACKAGE = "linux-image-amd64"
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200 quiet panic=-1"
# Loaded in /init, with everything they depend on (from each module's modinfo "depends=").
GUEST_MODULES = [
    "ata_piix", "sd_mod", "sr_mod",          # PIIX IDE: disks and the CD-ROM
    "crc32c_generic", "ext4", "isofs",       # ext4 (also mounts ext2) and ISO 9660
    "evdev", "psmouse",                      # /dev/input/event*, PS/2 mouse (i8042/atkbd are built in)
    "button",                                # ACPI power button, seen by acpid
    "e1000", "pcnet32", "virtio_pci", "virtio_net",   # the network cards VirtualBox offers
]
GRUB_MODULES = "linux normal iso9660 biosdisk serial terminal echo test configfile gzio"
BUILD_FORMAT = b"linux-iso v1"


class GuestBuildError(RuntimeError):
    """A guest image cannot be built; the message names what to install or what failed."""


# ---------------------------------------------------------------------------------------------
# Helpers shared with installer_iso.py


def package_version(package: str) -> str | None:
    """The installed version of a Debian package, or None."""
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Version}", package],
                          capture_output=True, text=True)
    if proc.returncode != 0 or "install ok installed" not in proc.stdout:
        return None
    return proc.stdout.split("|", 1)[1]


def require_packages(*packages: str) -> dict[str, str]:
    """Versions of the given Debian packages; fails naming every one that is missing."""
    versions = {p: package_version(p) for p in packages}
    missing = [p for p, v in versions.items() if v is None]
    if missing:
        raise GuestBuildError(
            f"building test guests needs the Debian package(s) {' '.join(missing)}: "
            f"run scripts/setup (or apt-get install {' '.join(missing)})")
    return versions  # type: ignore[return-value]


def require_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise GuestBuildError(f"{tool} is missing: install the Debian package {package} (scripts/setup)")
    return path


def run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise GuestBuildError(f"{what} failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
    return proc


@contextlib.contextmanager
def build_lock(name: str):
    """Serialises builders of one image across processes (parallel test runs)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def hash_tree(h, directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(directory)).encode() + b"\0")
            h.update(path.read_bytes())


def publish(tmp_path: Path, final: Path, keep_prefix: str) -> Path:
    """Atomically puts a finished image in place and drops older images of the same kind."""
    os.replace(tmp_path, final)
    for old in final.parent.glob(f"{keep_prefix}-*.iso"):
        if old != final:
            old.unlink(missing_ok=True)
    return final


# ---------------------------------------------------------------------------------------------
# The kernel package


APT_LISTS = Path("/var/lib/apt/lists")


def kernel_package() -> tuple[str, str]:
    """(package, version) that linux-image-amd64 depends on, e.g. ("linux-image-6.1.0-56-amd64",
    "6.1.192-2"); ("", "") when apt knows none. Remembered until the apt lists change, because
    apt-cache takes half a second."""
    memo = DEBS_DIR / "kernel-package.json"
    lists_mtime = APT_LISTS.stat().st_mtime_ns if APT_LISTS.is_dir() else 0
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(memo.read_text())
        if saved["lists_mtime"] == lists_mtime:
            return saved["package"], saved["version"]
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", KERNEL_META_PACKAGE],
                          capture_output=True, text=True)
    package = version = ""
    for line in proc.stdout.splitlines():
        if line.startswith("Depends:"):
            for dep in line.split(":", 1)[1].split(","):
                m = re.match(r"\s*(linux-image-\S+-amd64)\s*(?:\(=\s*([^)\s]+)\))?", dep)
                if m:
                    package, version = m.group(1), m.group(2) or ""
                    break
    if package and version:
        DEBS_DIR.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({"lists_mtime": lists_mtime, "package": package, "version": version}))
    return package, version


def kernel_deb() -> Path:
    """The kernel .deb under build/guests/debs, downloaded with apt-get download when missing."""
    package, version = kernel_package()
    if not package:
        cached = sorted(DEBS_DIR.glob("linux-image-*-amd64_*.deb"))
        if cached:  # no apt lists (offline): keep using what we have
            return cached[-1]
        raise GuestBuildError(
            f"apt-cache knows no {KERNEL_META_PACKAGE}: run apt-get update (scripts/setup does)")
    have = DEBS_DIR / f"{package}_{version.replace(':', '%3a')}_amd64.deb"
    if version and have.is_file():
        return have
    DEBS_DIR.mkdir(parents=True, exist_ok=True)
    spec = f"{package}={version}" if version else package
    with tempfile.TemporaryDirectory(dir=DEBS_DIR) as tmp:
        os.chmod(tmp, 0o755)  # let apt's sandbox user write here
        run(["apt-get", "download", "-q", spec], f"apt-get download {spec}", cwd=tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise GuestBuildError(f"apt-get download {spec} left {debs}")
        final = DEBS_DIR / debs[0].name
        os.replace(debs[0], final)
    for old in DEBS_DIR.glob("linux-image-*.deb"):
        if old != final:
            old.unlink(missing_ok=True)
    return final


def modinfo(ko: Path) -> dict[str, str]:
    """The .modinfo section of a kernel module (name=, depends=, ...), read from its ELF file."""
    data = ko.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise GuestBuildError(f"{ko} is not a 64-bit ELF module (compressed modules are unsupported)")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i):
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, stroff, _ = section(shstrndx)
    info: dict[str, str] = {}
    for i in range(shnum):
        name, offset, size = section(i)
        if data[stroff + name:data.index(b"\0", stroff + name)] == b".modinfo":
            for entry in data[offset:offset + size].split(b"\0"):
                key, sep, value = entry.partition(b"=")
                if sep and key.decode() not in info:
                    info[key.decode()] = value.decode()
    return info


def module_load_order(kernel_dir: Path, wanted: list[str]) -> list[tuple[str, Path, list[str]]]:
    """(name, path relative to kernel_dir, direct deps) for wanted modules and their dependencies,
    dependencies first. Modules that are built in (modules.builtin) are skipped."""
    by_name = {ko.name[:-3].replace("-", "_"): ko for ko in (kernel_dir / "kernel").rglob("*.ko")}
    builtin = {Path(line).name[:-3].replace("-", "_")
               for line in (kernel_dir / "modules.builtin").read_text().split()}
    order: list[tuple[str, Path, list[str]]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in by_name:
            if name in builtin:
                return
            raise GuestBuildError(f"kernel module {name} is neither in the kernel package nor built in")
        deps = [d.replace("-", "_") for d in modinfo(by_name[name]).get("depends", "").split(",") if d]
        for dep in deps:
            visit(dep)
        order.append((name, by_name[name].relative_to(kernel_dir), deps))

    for name in wanted:
        visit(name)
    return order


# ---------------------------------------------------------------------------------------------
# The initramfs, written as a newc cpio by hand (device nodes without root, reproducible bytes)


class Cpio:
    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name_b)
        self.out.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.out.write(b"\0" * (-self.out.tell() % 512))
        return self.out.getvalue()


def busybox_binary() -> Path:
    require_packages("busybox-static")
    path = Path("/bin/busybox")
    data = path.read_bytes()[:4096]
    if b"/lib64/ld-linux" in data or b"/lib/ld-linux" in data:
        raise GuestBuildError("/bin/busybox is dynamically linked: install busybox-static")
    return path


def build_initramfs(kernel_root: Path, kver: str) -> bytes:
    kernel_dir = kernel_root / "lib" / "modules" / kver
    modules = module_load_order(kernel_dir, GUEST_MODULES)
    busybox = busybox_binary()
    applets = run([str(busybox), "--list-full"], "busybox --list-full").stdout.split()

    cpio = Cpio()
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root", "mnt",
            "etc", "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules", f"lib/modules/{kver}",
            "etc/udhcpc", "www"]
    module_dirs = sorted({str(Path(f"lib/modules/{kver}") / rel.parent) for _, rel, _ in modules})
    for d in module_dirs:  # every parent of every module directory, in order
        parts = Path(d).parts
        for i in range(len(parts)):
            sub = "/".join(parts[:i + 1])
            if sub not in dirs:
                dirs.append(sub)
    for d in dirs:
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.chardev("dev/ttyS0", 4, 64)
    cpio.chardev("dev/tty0", 4, 0)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in applets:
        if applet not in ("bin/busybox", "linuxrc"):
            depth = applet.count("/")
            cpio.symlink(applet, "../" * depth + "bin/busybox")
    for name, rel, _ in modules:
        cpio.file(f"lib/modules/{kver}/{rel}", (kernel_dir / rel).read_bytes())
    paths = {name: rel for name, rel, _ in modules}
    dep_lines = [f"{rel}: {' '.join(str(paths[d]) for d in deps if d in paths)}".rstrip()
                 for _, rel, deps in modules]
    cpio.file(f"lib/modules/{kver}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
    cpio.file("etc/modules.load", ("\n".join(str(rel) for _, rel, _ in modules) + "\n").encode())

    def script(name):
        return (INIT_DIR / name).read_bytes()

    cpio.file("init", script("init"), 0o755)
    cpio.file("etc/inittab", script("inittab"))
    cpio.file("etc/profile", script("profile"))
    cpio.file("etc/banner", script("banner"))
    cpio.file("etc/guest-shell", script("guest-shell"), 0o755)
    cpio.file("etc/acpi/PWRF/00000080", script("power-button"), 0o755)
    cpio.file("sbin/mkfs.ext2", script("mkfs.ext2"), 0o755)
    cpio.file("bin/guest-info", script("guest-info"), 0o755)
    cpio.file("bin/guest-ticks", script("guest-ticks"), 0o755)
    cpio.file("bin/guest-soak", script("guest-soak"), 0o755)
    cpio.file("etc/udhcpc/default.script", script("udhcpc.script"), 0o755)
    cpio.file("etc/hostname", b"headbox-guest\n")
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("etc/group", b"root:x:0:\n")
    return gzip.compress(cpio.finish(), compresslevel=9, mtime=0)


# ---------------------------------------------------------------------------------------------


def _tool_versions() -> dict[str, str]:
    versions = require_packages("busybox-static", "grub-pc-bin", "grub-common", "xorriso", "mtools")
    require_tool("grub-mkrescue", "grub-common")
    require_tool("xorriso", "xorriso")
    require_tool("apt-get", "apt")
    if not Path("/usr/lib/grub/i386-pc/cdboot.img").is_file():
        raise GuestBuildError("/usr/lib/grub/i386-pc is missing: install the Debian package grub-pc-bin")
    return versions


def _cache_key(deb: Path, versions: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(BUILD_FORMAT + b"\0")
    h.update(Path(__file__).read_bytes())
    hash_tree(h, INIT_DIR)
    h.update(deb.name.encode() + b"\0")
    for package in sorted(versions):
        h.update(f"{package}={versions[package]}\0".encode())
    return h.hexdigest()[:20]


def linux_iso() -> Path:
    """The demo guest ISO under build/guests, built on first use (~10 s), cached after."""
    versions = _tool_versions()
    with build_lock("linux-iso"):
        deb = kernel_deb()
        final = CACHE_DIR / f"linux-{_cache_key(deb, versions)}.iso"
        if final.is_file():
            return final
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix=".linux-") as tmp_s:
            tmp = Path(tmp_s)
            kernel_root = tmp / "kernel"
            run(["dpkg-deb", "-x", str(deb), str(kernel_root)], f"dpkg -x {deb.name}")
            vmlinuz = sorted((kernel_root / "boot").glob("vmlinuz-*"))
            if len(vmlinuz) != 1:
                raise GuestBuildError(f"{deb.name} holds {len(vmlinuz)} kernels, expected 1")
            kver = vmlinuz[0].name[len("vmlinuz-"):]
            tree = tmp / "iso"
            (tree / "boot" / "grub").mkdir(parents=True)
            shutil.copyfile(vmlinuz[0], tree / "boot" / "vmlinuz")
            (tree / "boot" / "initrd.gz").write_bytes(build_initramfs(kernel_root, kver))
            grub_cfg = (INIT_DIR / "grub.cfg").read_text().replace("@CMDLINE@", KERNEL_CMDLINE)
            (tree / "boot" / "grub" / "grub.cfg").write_text(grub_cfg)
            out = tmp / "linux.iso"
            env = dict(os.environ, SOURCE_DATE_EPOCH="0")
            run(["grub-mkrescue", f"--install-modules={GRUB_MODULES}", "--fonts=", "--locales=",
                 "--themes=", "-o", str(out), str(tree)], "grub-mkrescue", env=env)
            return publish(out, final, "linux")


if __name__ == "__main__":
    start = time.monotonic()
    print(linux_iso(), f"({time.monotonic() - start:.1f} s)")
