"""Named shared-memory regions: guest RAM, video memory and mirrors that several processes map.

A region is a file under /dev/shm, created 0600 by its owner and found by name by the others
(ZeroMQ cannot pass file descriptors, so names are the rendezvous)."""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os

SHM_DIR = "/dev/shm"


class SharedRegion:
    """One MAP_SHARED mapping of a named file in /dev/shm."""

    def __init__(self, name: str, size: int | None = None, *, create: bool = False):
        if "/" in name:
            raise ValueError(f"shared-memory name must not contain '/': {name!r}")
        self.name = name
        self.path = os.path.join(SHM_DIR, name)
        self._owner_fd = None
        if create:
            if size is None or size <= 0:
                raise ValueError("a new shared-memory region needs a positive size")
            fd = self._create_exclusive()
        else:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if create:
                os.fchmod(fd, 0o600)  # the umask cannot widen it, but be explicit
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size if size is None else size
            self.size = size
            self.buf = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            if create:
                self._owner_fd = fd    # holds the owner's lock for as long as the region lives
            else:
                os.close(fd)
        self._anchor = ctypes.c_char.from_buffer(self.buf)
        self.address = ctypes.addressof(self._anchor)
        self.owner = create

    def _create_exclusive(self) -> int:
        """Create the file; a leftover of an owner that died (no lock on it) is replaced."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                stale = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise FileExistsError(f"shared-memory region {self.name} is in use") from None
                finally:
                    os.close(stale)
                os.unlink(self.path)
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        raise FileExistsError(f"shared-memory region {self.name} keeps reappearing")

    @classmethod
    def create(cls, name: str, size: int) -> "SharedRegion":
        return cls(name, size, create=True)

    @classmethod
    def open(cls, name: str) -> "SharedRegion":
        return cls(name)

    def view(self, offset: int = 0, size: int | None = None) -> memoryview:
        end = self.size if size is None else offset + size
        return memoryview(self.buf)[offset:end]

    def close(self) -> None:
        if self.buf is None:
            return
        del self._anchor
        try:
            self.buf.close()
        except BufferError:
            # A ctypes or numpy view still points into the mapping; the kernel frees it at exit.
            pass
        self.buf = None
        if getattr(self, "_owner_fd", None) is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        if self.owner:
            self.unlink()


def sweep_stale(prefix: str = "headbox-", min_age: float = 10.0) -> list[str]:
    """Remove regions whose owner died without cleaning up (killed): an owner holds a lock on its
    region for as long as it lives, so an unlocked one belongs to nobody. A region younger than
    `min_age` seconds is left alone: its owner may be between creating and locking it."""
    import time
    removed = []
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(SHM_DIR, name)
        try:
            if time.time() - os.stat(path).st_ctime < min_age:
                continue
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue            # alive
        finally:
            os.close(fd)
        try:
            os.unlink(path)
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


class PrivateRegion:
    """Anonymous memory with the same interface, for ROM images and tests."""

    def __init__(self, size: int, data: bytes = b""):
        self.name = None
        self.size = size
        self.buf = mmap.mmap(-1, size, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        if data:
            self.buf[: len(data)] = data
        self._anchor = ctypes.c_char.from_buffer(self.buf)
        self.address = ctypes.addressof(self._anchor)
        self.owner = True

    view = SharedRegion.view
    close = SharedRegion.close

    def unlink(self) -> None:
        pass
