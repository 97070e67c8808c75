"""The ops on one VM's settings: create, register, unregister (and delete), modify (and rename),
show, and its extradata."""

from __future__ import annotations

import datetime
import os
import shutil
import uuid as uuidlib

from .. import ostypes
from ..errors import (
    E_INVALIDARG,
    FILE_ERROR,
    INVALID_OBJECT_STATE,
    INVALID_VM_STATE,
    OBJECT_NOT_FOUND,
    ManagerError,
)
from . import changes as changes_mod
from . import launch, nic_changes, passwords
from .base import STOPPED_STATES, SettingsBase, absolute, as_uuid, unlink_quietly
from .model import NIC_API_NAMES, Machine, MachineEntry, Nic, nic_type_name
from .store import Transaction, make_folder

DEFAULT_CREATEVM_NIC = "Am79C973"     # VirtualBox's card for a VM made without an OS type


def _iso_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_mtime(path: str) -> str:
    stamp = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _delete_vm_files(settings_file: str, images: list[str]) -> None:
    """What `unregistervm --delete` removes, as VirtualBox does: the hard disk images no other VM
    uses, the settings file and its backup, Logs/, and the folder once nothing else is left in
    it (a user's own files there survive)."""
    for path in images:
        unlink_quietly(path)
    folder = os.path.dirname(settings_file)
    for path in (settings_file, settings_file + "-prev"):
        unlink_quietly(path)
    shutil.rmtree(os.path.join(folder, "Logs"), ignore_errors=True)
    try:
        os.rmdir(folder)
    except OSError:
        pass


def nic_info(slot: int, nic: Nic) -> dict:
    """One adapter in showvminfo's answer (docs/control-api.md)."""
    nat = nic.nat
    return {"slot": slot, "type": nic.mode, "adapter": NIC_API_NAMES.get(nic.adapter, nic.adapter),
            "nictype": nic.adapter, "mac": nic.mac, "cable": nic.cable,
            "network": nic.networks.get(nic.mode, ""),
            "nat": {"network": nat.network, "dns_host_resolver": nat.dns_host_resolver,
                    "dns_proxy": nat.dns_proxy, "tftp_prefix": nat.tftp_prefix, "tftp_file": nat.tftp_file,
                    "forwards": [rule.text() for rule in nat.forwards]}}


class VmOps(SettingsBase):
    def createvm(self, name, ostype=None, register=False, basefolder=None) -> dict:
        name = changes_mod.machine_name(name)
        os_type = None
        if ostype is not None:
            os_type = ostypes.find(ostype) if isinstance(ostype, str) else None
            if os_type is None:
                raise ManagerError(OBJECT_NOT_FOUND, f"Guest OS type '{ostype}' is invalid")
        with self.store.transaction() as tx:
            base = absolute(basefolder, "base folder") if basefolder else self._machine_folder(tx.registry)
            folder = os.path.join(base, name)
            path = os.path.join(folder, name + ".vbox")
            if os.path.lexists(path):
                raise ManagerError(FILE_ERROR, f"Machine settings file '{path}' already exists")
            if register and self._name_taken(tx, name):
                raise ManagerError(INVALID_OBJECT_STATE, f"A machine named '{name}' is already "
                                                         "registered")
            m = Machine(uuid=str(uuidlib.uuid4()), name=name, last_state_change=_iso_now())
            for nic in m.nics:
                nic.mac = nic_changes.random_mac({other.mac for other in m.nics})
                nic.adapter = nic_type_name(os_type.nic) if os_type is not None else DEFAULT_CREATEVM_NIC
            if os_type is not None:
                m.ostype = os_type.id
                m.memory_mb, m.vram_mb = os_type.ram_mb, os_type.vram_mb
                m.acpi, m.ioapic, m.rtc_utc = True, os_type.ioapic, os_type.rtc_utc
            tx.put_machine(path, m)
            tx.after.append(lambda: make_folder(os.path.join(folder, "Logs")))
            if register:
                tx.registry.machines.append(MachineEntry(m.uuid, path))
                tx.registry_dirty = True
        return {"uuid": m.uuid, "name": m.name, "settings_file": path}

    def registervm(self, path) -> dict:
        path = absolute(path, "settings file")
        with self.store.transaction() as tx:
            m = tx.machine_at(path)
            entry = tx.registry.machine_entry(m.uuid)
            if entry is not None:
                raise ManagerError(INVALID_OBJECT_STATE, f"Registered machine with UUID "
                                   f"{{{m.uuid}}} ('{entry.src}') already exists")
            if self._name_taken(tx, m.name):
                raise ManagerError(INVALID_OBJECT_STATE, f"A machine named '{m.name}' is already "
                                                         "registered")
            tx.registry.machines.append(MachineEntry(m.uuid, path))
            tx.registry_dirty = True
        return {"uuid": m.uuid, "name": m.name}

    def unregistervm(self, vm, delete=False) -> None:
        with self.store.transaction() as tx:
            entry = tx.registry.machine_entry(as_uuid(vm) or "")
            if entry is not None and not self._readable(tx, entry):
                # An inaccessible VM (its settings file is gone or unreadable) can still go.
                tx.registry.machines.remove(entry)
                tx.registry_dirty = True
                return
            entry, m = self._find(tx, vm)
            state = self.vm_state(m.uuid)
            if state not in STOPPED_STATES:
                raise ManagerError(INVALID_VM_STATE, f"Cannot unregister the machine '{m.name}' "
                                                     "while it is locked")
            tx.registry.machines.remove(entry)
            tx.registry_dirty = True
            if not delete:
                return
            doomed = []
            for medium_uuid in dict.fromkeys(m.attached_media()):
                medium = tx.registry.medium(medium_uuid)
                if medium and medium.kind == "hdd" and not self._users_of(tx, medium_uuid, m.uuid):
                    tx.registry.media.remove(medium)
                    doomed.append(medium.location)
            tx.after.append(lambda: _delete_vm_files(entry.src, doomed))

    @staticmethod
    def _readable(tx: Transaction, entry: MachineEntry) -> bool:
        try:
            tx.machine_at(entry.src)
        except ManagerError:
            return False
        return True

    def modifyvm(self, vm, changes) -> None:
        with self.store.transaction() as tx:
            entry, m = self._find(tx, vm)
            new = changes_mod.apply_changes(m, changes, self.vm_state(m.uuid))
            path = entry.src
            if new.name != m.name:
                if self._name_taken(tx, new.name, m.uuid):
                    raise ManagerError(INVALID_OBJECT_STATE, f"A machine named '{new.name}' is "
                                                             "already registered")
                path = self._rename(tx, entry, m.name, new)
            tx.put_machine(path, new)

    def change_running_vm(self, vm, changes, push) -> None:
        """controlvm's changes of a VM's settings that its processes apply while it runs (cable,
        NAT rules): checked as modifyvm checks them, then `push(old, new)` hands them to the VM and
        they are stored only if it succeeds, so a change the VM refuses is not kept either."""
        with self.store.transaction() as tx:
            entry, m = self._find(tx, vm)
            new = changes_mod.apply_changes(m, changes, self.vm_state(m.uuid), live=nic_changes.controlvm_key)
            tx.put_machine(entry.src, new)
            tx.before.append(lambda: push(m, new))

    def _rename(self, tx: Transaction, entry: MachineEntry, old_name: str, new: Machine) -> str:
        """Move `<old>/<old>.vbox` to `<new>/<new>.vbox` as VirtualBox does on a rename, with the
        media and serial log kept inside the folder; other layouts keep their path."""
        old_path = entry.src
        old_folder = os.path.dirname(old_path)
        if os.path.basename(old_folder) != old_name or os.path.basename(old_path) != old_name + ".vbox":
            return old_path
        new_folder = os.path.join(os.path.dirname(old_folder), new.name)
        if os.path.lexists(new_folder):
            raise ManagerError(FILE_ERROR, f"Could not rename the directory '{old_folder}' to "
                                           f"'{new_folder}' to save the settings file "
                                           "(VERR_ALREADY_EXISTS)")
        new_path = os.path.join(new_folder, new.name + ".vbox")

        def moved(path: str) -> str:
            if path.startswith(old_folder + os.sep):
                return new_folder + path[len(old_folder):]
            return path
        for medium in tx.registry.media:
            medium.location = moved(medium.location)
        if new.uartmode1:
            new.uartmode1 = ("file", moved(new.uartmode1[1]))
        entry.src = new_path
        tx.registry_dirty = True
        tx.before.append(lambda: os.rename(old_folder, new_folder))
        tx.after.append(lambda: os.unlink(os.path.join(new_folder, old_name + ".vbox")))
        tx.after.append(lambda: unlink_quietly(os.path.join(new_folder, old_name + ".vbox-prev")))
        return new_path

    def showvminfo(self, vm) -> dict:
        with self.store.transaction(write=False) as tx:
            entry, m = self._find(tx, vm)
            reg = tx.registry
        storage = []
        for c in m.controllers:
            rows = []
            for a in sorted(c.attachments, key=lambda a: (a.port, a.device)):
                medium = reg.medium(a.medium) if a.medium else None
                rows.append({"port": a.port, "device": a.device,
                             "type": "hdd" if a.type == "hdd" else "dvddrive",
                             "medium_uuid": a.medium,
                             "medium_path": medium.location if medium else None})
            storage.append({"name": c.name, "type": c.bus.lower(), "controller": c.type,
                            "ports": c.port_count, "attachments": rows})
        v, t = m.vrde, m.teleporter
        run = self._state_info(m.uuid)
        since = run.get("state_since")
        if not since:
            try:
                since = m.last_state_change or _iso_mtime(entry.src)
            except OSError:
                since = ""
        return {
            "name": m.name, "uuid": m.uuid, "ostype": m.ostype,
            "ostype_description": getattr(ostypes.find(m.ostype), "description", m.ostype),
            "settings_file": entry.src, "folder": os.path.dirname(entry.src),
            "memory_mb": m.memory_mb, "vram_mb": m.vram_mb, "cpus": m.cpus, "acpi": m.acpi,
            "ioapic": m.ioapic, "rtc_utc": m.rtc_utc, "boot": list(m.boot),
            "nics": [nic_info(i + 1, n) for i, n in enumerate(m.nics)],
            "storage": storage,
            "vrde": {"enabled": v.enabled, "ports": v.ports, "address": v.address,
                     "auth_type": v.auth_type,
                     "auth_library": v.auth_library or reg.properties.get("VRDEAuthLibrary")
                     or launch.DEFAULT_AUTH_LIBRARY,
                     "auth_timeout_ms": v.auth_timeout_ms, "multicon": v.multicon,
                     "reusecon": v.reusecon, "video_channel": v.video_channel,
                     "video_channel_quality": v.video_channel_quality,
                     "properties": dict(v.properties)},
            "teleporter": {"enabled": t.enabled, "port": t.port, "address": t.address,
                           "has_password": bool(t.password)},
            "usb": m.usb,
            "uart1": list(m.uart1) if m.uart1 else "off",
            "uartmode1": list(m.uartmode1) if m.uartmode1 else "disconnected",
            "accel": m.accel,
            "cpuid": {f"{leaf:08x}": list(regs) for leaf, regs in sorted(m.cpuid.items())},
            "extradata_count": len(m.extradata),
            "state": str(run.get("state") or "PoweredOff"), "state_since": since,
            "vrde_port_bound": run.get("vrde_port_bound"),
        }

    def setextradata(self, target, key, value=None) -> None:
        if not isinstance(key, str) or not key:
            raise ManagerError(E_INVALIDARG, "Give the extradata key")
        if value is not None and not isinstance(value, str):
            raise ManagerError(E_INVALIDARG, f"Invalid extradata value for '{key}': expected a string")
        if value and key.startswith(launch.USERS_PREFIX):
            value = passwords.auth_simple_hash(value)
        with self.store.transaction() as tx:
            if target == "global":
                items = tx.registry.extradata
                tx.registry_dirty = True
            else:
                entry, m = self._find(tx, target)
                items = m.extradata
                tx.put_machine(entry.src, m)
            if value:
                items[key] = value
            else:
                items.pop(key, None)

    def getextradata(self, target, key=None):
        with self.store.transaction(write=False) as tx:
            items = tx.registry.extradata if target == "global" else self._find(tx, target)[1].extradata
        if key is None or key == "enumerate":
            return [{"key": k, "value": items[k]} for k in sorted(items)]
        return items.get(key)
