"""Raw disk images (a plain file of 512-byte sectors), and the file handling every image format
shares: opening with an exclusive or shared lock, positional I/O, and one-line errors."""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from .backend import ImageError

SECTOR = 512


def open_image_file(path: str, readonly: bool) -> int:
    """Open an image file and lock it: exclusive for a writer, shared for a reader, so that two
    VMs never write one image and nobody reads an image while another VM writes it."""
    flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(f"Could not find file for the medium '{path}' (VERR_FILE_NOT_FOUND)") from None
    except IsADirectoryError:
        raise ImageError(f"Could not open the medium '{path}': it is a directory (VERR_IS_A_DIRECTORY)") from None
    except PermissionError:
        mode = "reading" if readonly else "writing"
        raise ImageError(f"Could not open the medium '{path}' for {mode}: permission denied "
                         "(VERR_ACCESS_DENIED)") from None
    except OSError as exc:
        raise ImageError(f"Could not open the medium '{path}': {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"Could not open the medium '{path}': it is not a regular file")
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImageError(f"'{path}' is already in use by another running VM") from None
        except OSError as exc:
            raise ImageError(f"Could not lock the medium '{path}': {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_size(fd: int, path: str) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError as exc:
        raise ImageError(f"Could not get the size of the medium '{path}': {exc.strerror}") from None


def pread_exact(fd: int, path: str, buf: memoryview, offset: int) -> None:
    """Fill buf from the file at offset; a short file is a corrupt image, not a silent zero-fill."""
    done = 0
    while done < len(buf):
        try:
            n = os.preadv(fd, [buf[done:]], offset + done)
        except OSError as exc:
            raise ImageError(f"Could not read from the medium '{path}' at offset {offset + done}: "
                             f"{exc.strerror}") from None
        if n == 0:
            raise ImageError(f"Could not read from the medium '{path}': unexpected end of file "
                             f"at offset {offset + done}")
        done += n


def pwrite_all(fd: int, path: str, buffers: list, offset: int) -> None:
    """Write the buffers back to back at offset, retrying short writes, as one pwritev when it can."""
    total = sum(len(b) for b in buffers)
    try:
        n = os.pwritev(fd, buffers, offset)
        if n < total:
            # Rare (signals, quota edges): finish the rest from a flat copy.
            rest = b"".join(bytes(b) for b in buffers)[n:]
            while rest:
                m = os.pwrite(fd, rest, offset + n)
                n += m
                rest = rest[m:]
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ImageError(f"Could not write to the medium '{path}': the host disk is full "
                             "(VERR_DISK_FULL)") from None
        raise ImageError(f"Could not write to the medium '{path}' at offset {offset}: "
                         f"{exc.strerror}") from None


def fsync(fd: int, path: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise ImageError(f"Could not flush the medium '{path}' to disk: {exc.strerror}") from None


def check_range(path: str, offset: int, length: int, size: int, sector_size: int) -> None:
    if offset < 0 or length < 0 or offset % sector_size or length % sector_size:
        raise ImageError(f"Access to '{path}' at offset {offset}, length {length} is not aligned "
                         f"to {sector_size}-byte sectors")
    if offset + length > size:
        raise ImageError(f"Access to '{path}' at offset {offset}, length {length} is past the end "
                         f"of the medium ({size} bytes)")


class ImageFile:
    """What every image format shares: an open, locked fd; flush; close (fsync if this open wrote,
    then drop the file and its lock); use as a context manager."""

    _fd: int = -1
    _modified: bool = False
    path: str
    size: int
    sector_size: int

    def read(self, offset: int, length: int) -> bytes:
        """Guest bytes at file bytes [offset, offset+length): flat formats (raw, ISO)."""
        check_range(self.path, offset, length, self.size, self.sector_size)
        buf = bytearray(length)
        pread_exact(self._fd, self.path, memoryview(buf), offset)
        return bytes(buf)

    def flush(self) -> None:
        if self._modified:
            fsync(self._fd, self.path)

    def release_lock(self) -> None:
        """Flush and let another process take the image (a teleport hands it to the target);
        the file stays open so that take_lock() can resume using it."""
        self.flush()
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def take_lock(self) -> None:
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_SH if self.readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImageError(f"'{self.path}' is already in use by another running VM") from None

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                if self._modified:
                    fsync(fd, self.path)
            finally:
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RawImage(ImageFile):
    """A raw disk image: guest sector n is file bytes [512n, 512n+512)."""

    sector_size = SECTOR
    format = "RAW"

    def __init__(self, path: str, fd: int, readonly: bool):
        """Take ownership of an open, locked fd (see open_image_file); closes it on error."""
        self.path = path
        self.readonly = readonly
        self._fd = fd
        self._modified = False
        try:
            self.size = file_size(fd, path)
            if self.size == 0:
                raise ImageError(f"VERR_VD_RAW_SIZE_TOO_SMALL: the raw disk image '{path}' is empty")
            if self.size % SECTOR:
                raise ImageError(f"VERR_VD_RAW_SIZE_MODULO_512: the raw disk image '{path}' is "
                                 f"{self.size} bytes, not a multiple of {SECTOR}")
        except BaseException:
            os.close(fd)
            raise

    def write(self, offset: int, data: bytes) -> None:
        if self.readonly:
            raise ImageError(f"The medium '{self.path}' is opened read-only")
        data = memoryview(data).cast("B")
        check_range(self.path, offset, len(data), self.size, SECTOR)
        pwrite_all(self._fd, self.path, [data], offset)
        self._modified = True


def open(path: str, readonly: bool = False) -> RawImage:  # noqa: A001 - the module's verb
    return RawImage(path, open_image_file(path, readonly), readonly)


def create(path: str, size: int, variant: str = "Fixed", progress=None) -> None:
    """Create a raw image of size bytes with every block allocated. Like VirtualBox's RAW backend
    there is no dynamic variant: a sparse raw file would silently run the host disk full later."""
    if variant.lower() != "fixed":
        raise ImageError(f"Could not create the medium '{path}': format 'RAW' does not support "
                         f"dynamic storage (variant '{variant}'); use --variant Fixed")
    if size <= 0 or size % SECTOR:
        raise ImageError(f"Could not create the medium '{path}': size {size} is not a positive "
                         f"multiple of {SECTOR} bytes")
    with NewImageFile(path) as new:
        preallocate(new.fd, path, 0, size, progress, 0, 100)


class NewImageFile:
    """A new image is built under a temporary name and linked into place only when complete, so
    an interrupted create never leaves a half-written image under the requested name."""

    def __init__(self, path: str):
        self.path = path
        if os.path.lexists(path):
            raise ImageError(f"Could not create the medium storage unit '{path}': the file "
                             "already exists (VERR_ALREADY_EXISTS)")
        directory = os.path.dirname(os.path.abspath(path))
        self.tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.creating")
        try:
            self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ImageError(f"Could not create the medium storage unit '{path}': "
                             f"{exc.strerror}") from None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                fsync(self.fd, self.path)
        finally:
            os.close(self.fd)
        if exc_type is not None:
            os.unlink(self.tmp)
            return False
        try:
            # link() refuses to replace a file someone created meanwhile; rename() would not.
            os.link(self.tmp, self.path)
        except FileExistsError:
            os.unlink(self.tmp)
            raise ImageError(f"Could not create the medium storage unit '{self.path}': the file "
                             "already exists (VERR_ALREADY_EXISTS)") from None
        except OSError:
            os.rename(self.tmp, self.path)   # file systems without hard links
        else:
            os.unlink(self.tmp)
        return False


def preallocate(fd: int, path: str, start: int, length: int, progress, lo: int, hi: int) -> None:
    """Reserve [start, start+length) on the host disk in ten steps, reporting lo..hi percent, so a
    fixed image can never hit a full host disk at guest-write time."""
    step = -(-length // 10)
    for i in range(10):
        if progress:
            progress(lo + (hi - lo) * i // 10)
        off = start + i * step
        n = min(step, start + length - off)
        if n <= 0:
            continue
        try:
            os.posix_fallocate(fd, off, n)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ImageError(f"Could not create the medium '{path}': not enough free space on "
                                 f"the host disk for {length} bytes (VERR_DISK_FULL)") from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise ImageError(f"Could not create the medium '{path}': {exc.strerror}") from None
            _write_zeros(fd, path, off, n)
    if progress:
        progress(hi)


def _write_zeros(fd: int, path: str, offset: int, length: int) -> None:
    chunk = bytes(min(length, 1 << 20))
    while length:
        n = min(length, len(chunk))
        pwrite_all(fd, path, [memoryview(chunk)[:n]], offset)
        offset += n
        length -= n
