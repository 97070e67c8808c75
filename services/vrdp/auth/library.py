"""Finds the authentication library a configuration names: a built-in, a module path or a .py file.

A library that cannot be loaded or has no `authenticate` raises LibraryError (the logon is then denied).
A .py file is run only when it and every folder above it belong to this user or root and no other
user can change them (as sudo and sshd check their files): the RDP server may run as root."""

from __future__ import annotations

import importlib
import importlib.util
import os
import stat
import threading
from collections.abc import Callable

BUILT_IN = {
    "VBoxAuth": "services.vrdp.auth.pam",
    "VRDPAuth": "services.vrdp.auth.pam",  # VirtualBox's legacy name falls back to VBoxAuth
    "VBoxAuthSimple": "services.vrdp.auth.simple",
}

_cache: dict[str, Callable] = {}
_lock = threading.Lock()


class LibraryError(Exception):
    pass


def _check_trusted(path: str) -> None:
    """LibraryError unless path and each folder above it are ours or root's and writable by no one
    else (a sticky folder such as /tmp is fine: others cannot replace what is ours in it)."""
    me = os.geteuid()
    current = path
    while True:
        info = os.stat(current)
        if info.st_uid not in (0, me):
            raise LibraryError(f"{current} belongs to uid {info.st_uid}, not to this user or root")
        shared = info.st_mode & 0o022 and not (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX)
        if shared:
            raise LibraryError(f"{current} is writable by other users (mode {stat.S_IMODE(info.st_mode):o})")
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def _import(name: str):
    if name in BUILT_IN:
        return importlib.import_module(BUILT_IN[name])
    if name.endswith(".py") or os.sep in name:
        path = os.path.realpath(name)
        if not os.path.isfile(path):
            raise LibraryError("no such file")
        _check_trusted(path)
        spec = importlib.util.spec_from_file_location(f"headbox_vrde_auth_{abs(hash(path)):x}", path)
        if spec is None or spec.loader is None:
            raise LibraryError("not a Python module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name)


def load_library(name: str) -> Callable:
    """The `authenticate` function of the library `name` (loaded once per name)."""
    with _lock:
        if name in _cache:
            return _cache[name]
        try:
            module = _import(name)
        except LibraryError:
            raise
        except Exception as exc:  # a user's module may fail in any way while it loads
            raise LibraryError(f"{type(exc).__name__}: {exc}") from None
        function = getattr(module, "authenticate", None)
        if not callable(function):
            raise LibraryError("it exports no authenticate() function")
        _cache[name] = function
        return function
