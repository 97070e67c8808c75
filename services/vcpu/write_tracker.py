"""Which pages of a shared-memory mapping this process wrote since the last look, from the kernel:
userfaultfd write-protection in asynchronous mode (Linux 6.7+) and the PAGEMAP_SCAN ioctl.

A write to a protected page is resolved by the kernel itself (no fault handler, no thread) and the
page is marked written; a scan reports the written pages and protects them again in one step. This
is the tcg accelerator's dirty log (its processors write guest RAM through this process's mapping);
writes by other processes (device DMA) are not seen and must be reported separately."""

from __future__ import annotations

import ctypes
import os
import struct

import numpy as np

PAGE = 4096
_libc = ctypes.CDLL(None, use_errno=True)
_SYS_USERFAULTFD = 323                       # x86-64
_UFFD_USER_MODE_ONLY = 1
_UFFD_API = 0xAA
_FEATURE_WP_HUGETLBFS_SHMEM = 1 << 12
_FEATURE_WP_UNPOPULATED = 1 << 13
_FEATURE_WP_ASYNC = 1 << 15
_NEEDED = _FEATURE_WP_ASYNC | _FEATURE_WP_HUGETLBFS_SHMEM | _FEATURE_WP_UNPOPULATED
_REGISTER_MODE_WP = 1 << 1
_WRITEPROTECT_MODE_WP = 1 << 0


def _iowr(kind: int, number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | number


_UFFDIO_API = _iowr(0xAA, 0x3F, 24)          # struct uffdio_api {api, features, ioctls}
_UFFDIO_REGISTER = _iowr(0xAA, 0x00, 32)     # {range {start, len}, mode, ioctls}
_UFFDIO_WRITEPROTECT = _iowr(0xAA, 0x06, 24) # {range {start, len}, mode}
_PAGEMAP_SCAN = _iowr(ord("f"), 16, 96)      # struct pm_scan_arg
_PM_SCAN_WP_MATCHING = 1 << 0
_PM_SCAN_CHECK_WPASYNC = 1 << 1
_PAGE_IS_WRITTEN = 1 << 1
_REGIONS = 4096                               # page_region entries per ioctl


class WriteTrackingUnavailable(OSError):
    pass


def _ioctl(fd: int, request: int, buf: bytearray, what: str) -> int:
    arg = (ctypes.c_char * len(buf)).from_buffer(buf)
    result = _libc.ioctl(fd, ctypes.c_ulong(request), arg)
    if result < 0:
        errno = ctypes.get_errno()
        raise WriteTrackingUnavailable(errno, f"{what}: {os.strerror(errno)}")
    return result


class WriteTracker:
    """Tracks writes to [address, address + size) (page-aligned, a shared mapping of this process)."""

    def __init__(self, address: int, size: int):
        if address % PAGE or size % PAGE:
            raise ValueError("write tracking needs a page-aligned range")
        self.address, self.size = address, size
        fd = _libc.syscall(_SYS_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY)
        if fd < 0:
            errno = ctypes.get_errno()
            raise WriteTrackingUnavailable(errno, f"userfaultfd: {os.strerror(errno)}")
        self.uffd = fd
        try:
            api = bytearray(struct.pack("<QQQ", _UFFD_API, _NEEDED, 0))
            _ioctl(fd, _UFFDIO_API, api, "userfaultfd API (needs Linux 6.7 with asynchronous write-protect)")
            register = bytearray(struct.pack("<QQQQ", address, size, _REGISTER_MODE_WP, 0))
            _ioctl(fd, _UFFDIO_REGISTER, register, "userfaultfd register")
            self.pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            os.close(fd)
            raise
        self._vec = (ctypes.c_uint64 * (3 * _REGIONS))()
        self.protect_all()

    def protect_all(self) -> None:
        """Start over: every page counts as not written."""
        arg = bytearray(struct.pack("<QQQ", self.address, self.size, _WRITEPROTECT_MODE_WP))
        _ioctl(self.uffd, _UFFDIO_WRITEPROTECT, arg, "userfaultfd write-protect")

    def take_written(self) -> np.ndarray:
        """Indices of the pages written since the last call (or protect_all), protected again."""
        found = []
        start, end = self.address, self.address + self.size
        vec = self._vec
        while start < end:
            arg = bytearray(struct.pack(
                "<12Q", 96, _PM_SCAN_WP_MATCHING | _PM_SCAN_CHECK_WPASYNC, start, end, 0,
                ctypes.addressof(vec), _REGIONS, 0, 0, _PAGE_IS_WRITTEN, 0, _PAGE_IS_WRITTEN))
            count = _ioctl(self.pagemap, _PAGEMAP_SCAN, arg, "PAGEMAP_SCAN")
            if count:
                regions = np.ctypeslib.as_array(vec)[:3 * count].reshape(count, 3).astype(np.int64)
                first = (regions[:, 0] - self.address) // PAGE
                lengths = (regions[:, 1] - regions[:, 0]) // PAGE
                # Every page of every region: a run of consecutive indices per region.
                offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
                found.append((np.repeat(first, lengths) + offsets).astype(np.int64))
            walk_end = struct.unpack_from("<Q", arg, 32)[0]
            if count < _REGIONS or walk_end >= end:
                break
            start = walk_end
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)

    def close(self) -> None:
        if self.uffd >= 0:
            os.close(self.uffd)
            os.close(self.pagemap)
            self.uffd = -1
