"""Writing a file only its owner may read, atomically: created 0600 under a temporary name, synced,
renamed into place (and the folder synced), so a reader sees the old file or the new one, never a
part, and a crash leaves one of the two. Settings, keys, certificates and configurations use it."""

from __future__ import annotations

import os
import threading


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
