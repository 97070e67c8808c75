"""Builds the Debian installer boot ISO (an equivalent of Debian's mini.iso, BIOS only), cached.

`installer_iso()` puts the text netboot tree of debian-installer-12-netboot-amd64 (linux, initrd.gz
and the syslinux boot-screens with vesamenu and splash.png) on an isolinux El Torito ISO with
Debian's isolinux.bin and syslinux-common's ldlinux.c32. Its first screen is the installer's own
640x480 vesamenu: "Debian GNU/Linux installer menu (BIOS mode)" with Install, Advanced options,
Accessible dark contrast installer menu and Help, and no timeout. Cached in <repo>/build/guests,
keyed by the package versions and this file."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from services.demo.linux_iso import (
    CACHE_DIR,
    GuestBuildError,
    build_lock,
    publish,
    require_packages,
    require_tool,
    run,
)

NETBOOT_PACKAGE = "debian-installer-12-netboot-amd64"
NETBOOT_ROOT = Path("/usr/lib/debian-installer/images/12/amd64/text")
NETBOOT_TREE = "debian-installer/amd64"
ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
SYSLINUX_BIOS_MODULES = Path("/usr/lib/syslinux/modules/bios")
BUILD_FORMAT = b"installer-iso v1"

__all__ = ["installer_iso", "GuestBuildError"]


def _versions() -> dict[str, str]:
    versions = require_packages(NETBOOT_PACKAGE, "isolinux", "syslinux-common", "xorriso")
    require_tool("xorriso", "xorriso")
    for path, package in ((NETBOOT_ROOT / NETBOOT_TREE / "linux", NETBOOT_PACKAGE),
                          (ISOLINUX_BIN, "isolinux"),
                          (SYSLINUX_BIOS_MODULES / "ldlinux.c32", "syslinux-common")):
        if not path.is_file():
            raise GuestBuildError(f"{path} is missing: reinstall the Debian package {package}")
    return versions


def _cache_key(versions: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(BUILD_FORMAT + b"\0")
    h.update(Path(__file__).read_bytes())
    for package in sorted(versions):
        h.update(f"{package}={versions[package]}\0".encode())
    return h.hexdigest()[:20]


def installer_iso() -> Path:
    """The installer boot ISO under build/guests (about 50 MB), built on first use, cached after."""
    versions = _versions()
    with build_lock("installer-iso"):
        final = CACHE_DIR / f"installer-{_cache_key(versions)}.iso"
        if final.is_file():
            return final
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix=".installer-") as tmp_s:
            tmp = Path(tmp_s)
            tree = tmp / "iso"
            src = NETBOOT_ROOT / NETBOOT_TREE
            dst = tree / NETBOOT_TREE
            (dst / "boot-screens").mkdir(parents=True)
            for name in ("linux", "initrd.gz"):
                shutil.copyfile(src / name, dst / name)
            for path in (src / "boot-screens").iterdir():
                shutil.copyfile(path, dst / "boot-screens" / path.name)
            # isolinux reads isolinux.cfg next to itself; the netboot tree's pxelinux config is the
            # same menu (paths are relative to the ISO root, as on mini.iso).
            shutil.copyfile(src / "pxelinux.cfg" / "default", tree / "isolinux.cfg")
            shutil.copyfile(ISOLINUX_BIN, tree / "isolinux.bin")  # a copy: -boot-info-table patches it
            shutil.copyfile(SYSLINUX_BIOS_MODULES / "ldlinux.c32", tree / "ldlinux.c32")
            out = tmp / "installer.iso"
            env = dict(os.environ, SOURCE_DATE_EPOCH="0")
            run(["xorriso", "-as", "mkisofs", "-o", str(out), "-r", "-J", "-V", "DEBIAN_INSTALLER",
                 "-b", "isolinux.bin", "-c", "boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                 "-boot-info-table", str(tree)], "xorriso", env=env)
            return publish(out, final, "installer")


if __name__ == "__main__":
    start = time.monotonic()
    print(installer_iso(), f"({time.monotonic() - start:.1f} s)")
