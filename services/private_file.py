"""Files and folders only their owner may use. A file is written atomically: created 0600 under a
temporary name, synced, renamed into place (and the folder synced), so a reader sees the old file
or the new one, never a part, and a crash leaves one of the two. Settings, keys, certificates and
configurations use it. A folder that holds sockets, launch specs or state is made 0700, and one
that another user made or can write to is refused: whoever controls it controls what our processes
read from it (a launch spec names the RDP server's authentication library)."""

from __future__ import annotations

import os
import stat
import threading


class UnsafeFolder(PermissionError):
    """A folder we would keep private things in is not ours alone; the message says why and what to do."""


def private_folder(path: str | os.PathLike) -> str:
    """path as a folder of this user's alone: created 0700 when missing (its parent must exist);
    UnsafeFolder when it is a symbolic link, not a folder, another user's, or group or world writable."""
    path = os.fspath(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFolder(f"{path} is a symbolic link; a private folder must be a real folder: remove it")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(f"{path} is not a folder: remove it")
    if info.st_uid != os.geteuid():
        raise UnsafeFolder(f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}): "
                           "another user may have made it to take over; remove it, or set XDG_RUNTIME_DIR "
                           "to a folder of your own")
    if info.st_mode & 0o022:
        raise UnsafeFolder(f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):03o}): "
                           "what is in it cannot be trusted; remove it")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def write_private(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace path with data (str is written as UTF-8); OSError on failure, nothing left behind."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
    view = memoryview(data.encode() if isinstance(data, str) else data)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dirfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
