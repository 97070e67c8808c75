"""What every settings op stands on: the settings home's store, the VM's run state as the daemon
reports it, and finding VMs and media by name, UUID or path."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from ..errors import E_INVALIDARG, INVALID_VM_STATE, OBJECT_NOT_FOUND, ManagerError
from . import changes as changes_mod
from .model import Machine, MachineEntry, Registry
from .store import Store, Transaction

STOPPED_STATES = ("PoweredOff", "Aborted", "Saved", "Teleported")
_UUID = re.compile(r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?")


def as_uuid(text) -> str | None:
    """The UUID in text (braces and case as VirtualBox accepts them), or None."""
    return text.strip("{}").lower() if isinstance(text, str) and _UUID.fullmatch(text) else None


def not_found(vm) -> ManagerError:
    return ManagerError(OBJECT_NOT_FOUND, f"Could not find a registered machine named '{vm}'")


def absolute(path, what: str = "file") -> str:
    """path, normalized; a relative path is refused: the caller's folder is not the manager's
    (VBoxManage makes paths absolute before it asks)."""
    if not isinstance(path, str) or not path:
        raise ManagerError(E_INVALIDARG, f"Give the {what}'s path")
    if not os.path.isabs(path):
        raise ManagerError(E_INVALIDARG, f"The {what} path '{path}' is relative; give an absolute path")
    return os.path.normpath(path)


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class SettingsBase:
    """The store and the lookups the op mixins share; Settings (api.py) combines them."""

    def __init__(self, home: str, vm_state: Callable[[str], str | dict] = lambda uuid: "PoweredOff"):
        """vm_state(uuid) is the VM's run state: a state name, or a map with "state" and
        optionally "state_since" and "vrde_port_bound" (which showvminfo then reports)."""
        self.store = Store(home)
        self.home = self.store.home
        self._vm_state = vm_state

    def _state_info(self, uuid: str) -> dict:
        info = self._vm_state(uuid)
        return dict(info) if isinstance(info, dict) else {"state": info}

    def vm_state(self, uuid: str) -> str:
        return str(self._state_info(uuid).get("state") or "PoweredOff")

    def _machine_folder(self, reg: Registry) -> str:
        return reg.properties.get("defaultMachineFolder") or os.path.join(self.home, "Machines")

    def _machines(self, tx: Transaction) -> list[tuple[MachineEntry, Machine | None]]:
        """Every registered VM; None for one whose settings file cannot be read (inaccessible)."""
        found = []
        for entry in tx.registry.machines:
            try:
                found.append((entry, tx.machine_at(entry.src)))
            except ManagerError:
                found.append((entry, None))
        return found

    def _find(self, tx: Transaction, vm) -> tuple[MachineEntry, Machine]:
        if not isinstance(vm, str) or not vm:
            raise not_found(vm)
        wanted = as_uuid(vm)
        if wanted:
            entry = tx.registry.machine_entry(wanted)
            if entry:
                return entry, tx.machine_at(entry.src)
        for entry, machine in self._machines(tx):
            if machine is not None and machine.name == vm:
                return entry, machine
        # An inaccessible VM has no readable name; its settings file is named after it.
        for entry, machine in self._machines(tx):
            if machine is None and os.path.splitext(os.path.basename(entry.src))[0] == vm:
                try:
                    tx.machine_at(entry.src)
                except ManagerError as error:
                    raise ManagerError(error.code, f"The machine '{vm}' is inaccessible: {error.message}") from None
        raise not_found(vm)

    def _name_taken(self, tx: Transaction, name: str, other_than: str = "") -> bool:
        return any(m is not None and m.name == name and m.uuid != other_than
                   for _, m in self._machines(tx))

    def _require_mutable(self, m: Machine) -> None:
        state = self.vm_state(m.uuid)
        if state not in changes_mod.MUTABLE_STATES:
            raise ManagerError(INVALID_VM_STATE, f"The machine is not mutable (state is {state})")

    def _users_of(self, tx: Transaction, medium_uuid: str, except_vm: str = "") -> list[Machine]:
        return [m for _, m in self._machines(tx)
                if m is not None and m.uuid != except_vm and medium_uuid in m.attached_media()]

    def _read(self, vm) -> tuple[MachineEntry, Machine, Registry]:
        with self.store.transaction(write=False) as tx:
            entry, m = self._find(tx, vm)
            return entry, m, tx.registry
