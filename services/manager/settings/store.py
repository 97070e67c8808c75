"""The settings files on disk: every change is a transaction under an exclusive flock that
re-reads the files, and every file is replaced atomically (0600, in 0700 folders)."""

from __future__ import annotations

import fcntl
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import contextmanager

from services.private_file import write_private

from ..errors import E_INVALIDARG, FILE_ERROR, ManagerError
from . import machine_xml, registry_xml
from .model import Machine, Registry

REGISTRY_FILE = "Headbox.xml"
LOCK_FILE = ".settings.lock"
PREVIOUS = "-prev"          # Headbox.xml-prev, <vm>.vbox-prev: each file before its last change


def write_atomic(path: str, data: bytes) -> None:
    """Replace a settings file atomically (0600); a failure is the user's one-line error."""
    try:
        write_private(path, data)
    except OSError as exc:
        raise ManagerError(FILE_ERROR, f"Could not write the settings file '{path}': "
                                       f"{exc.strerror}") from None


def make_folder(path: str) -> None:
    """Create path and any missing parent, each 0700 (os.makedirs gives parents the umask's mode)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        make_folder(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ManagerError(FILE_ERROR, f"Could not create the folder '{path}': {exc.strerror}") from None


class Transaction:
    """What one operation read and wants written. Nothing touches the disk until commit(), so an
    operation that raises halfway changes nothing."""

    def __init__(self, store: Store, registry: Registry):
        self.store = store
        self.registry = registry
        self.registry_dirty = False
        self._machines: dict[str, Machine] = {}
        self._writes: dict[str, Machine] = {}
        self.before: list[Callable[[], None]] = []    # run before any file is written
        self.after: list[Callable[[], None]] = []     # run once everything is written

    def machine_at(self, path: str) -> Machine:
        if path not in self._machines:
            self._machines[path] = self.store.read_machine(path)
        return self._machines[path]

    def put_machine(self, path: str, machine: Machine) -> None:
        self._machines[path] = machine
        self._writes[path] = machine

    def forget_write(self, path: str) -> None:
        self._writes.pop(path, None)

    def commit(self) -> None:
        files = {path: machine_xml.to_xml(machine) for path, machine in self._writes.items()}
        if self.registry_dirty:
            files[self.store.registry_path] = registry_xml.to_xml(self.registry)
        for data in files.values():
            _check_readable(data)
        try:
            for action in self.before:
                action()
            for path, data in files.items():
                make_folder(os.path.dirname(path))
                keep_previous(path)
                write_atomic(path, data)
            for action in self.after:
                action()
        except OSError as exc:
            raise ManagerError(FILE_ERROR, f"Could not update '{exc.filename}': {exc.strerror}") from None


def keep_previous(path: str) -> None:
    """The file as it was before this change goes to <path>-prev (VirtualBox's name), unless it is
    not well-formed itself: a damaged file must not replace the last good copy."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        ET.fromstring(data)
    except (OSError, ET.ParseError):
        return
    write_atomic(path + PREVIOUS, data)


def _recoverable(error: ManagerError, path: str) -> ManagerError:
    """A settings file we cannot read names its previous version, when there is one."""
    if os.path.exists(path + PREVIOUS):
        return ManagerError(error.code, f"{error.message}; its previous version is '{path}{PREVIOUS}': "
                                        f"copy it over '{path}' to recover")
    return error


def _check_readable(data: bytes) -> None:
    """Refuse to write a file we could not read back (XML cannot hold most control characters),
    before anything is written."""
    try:
        ET.fromstring(data)
    except ET.ParseError:
        raise ManagerError(E_INVALIDARG, "A name or value contains a control character, which a "
                                         "settings file cannot hold") from None


class Store:
    def __init__(self, home: str):
        self.home = os.path.abspath(home)
        self.registry_path = os.path.join(self.home, REGISTRY_FILE)
        self.lock_path = os.path.join(self.home, LOCK_FILE)

    @contextmanager
    def transaction(self, write: bool = True):
        """Lock (exclusive to write, shared to read), read the registry, yield a Transaction and
        commit it if the block ends without an exception."""
        make_folder(self.home)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            tx = Transaction(self, self.read_registry())
            yield tx
            if write:
                tx.commit()
        finally:
            os.close(fd)     # closing drops the flock

    def read_registry(self) -> Registry:
        try:
            with open(self.registry_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return Registry()
        except OSError as exc:
            raise ManagerError(FILE_ERROR, f"Could not read the settings file "
                                           f"'{self.registry_path}': {exc.strerror}") from None
        try:
            return registry_xml.from_xml(data, self.registry_path)
        except ManagerError as error:
            raise _recoverable(error, self.registry_path) from None

    def read_machine(self, path: str) -> Machine:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ManagerError(FILE_ERROR, f"Could not find the settings file '{path}' "
                                           "(VERR_FILE_NOT_FOUND)") from None
        except OSError as exc:
            raise ManagerError(FILE_ERROR, f"Could not read the settings file '{path}': "
                                           f"{exc.strerror}") from None
        try:
            return machine_xml.from_xml(data, path)
        except ManagerError as error:
            raise _recoverable(error, path) from None
