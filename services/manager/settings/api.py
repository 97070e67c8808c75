"""The settings operations of docs/control-api.md, one method per op, each a transaction on the
settings files; plus what the daemon needs to run a VM (launch_spec, vrde_config, ...)."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import uuid as uuidlib
from collections.abc import Callable

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
from . import launch, media, passwords
from .model import Attachment, Controller, Machine, MachineEntry, Medium, Registry
from .store import Store, Transaction, make_folder

MiB = 1 << 20
STOPPED_STATES = ("PoweredOff", "Aborted", "Saved", "Teleported")
_UUID = re.compile(r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?")
# setproperty name -> SystemProperties attribute, as VirtualBox.xml names them.
PROPERTIES = {
    "machinefolder": "defaultMachineFolder",
    "vrdeauthlibrary": "VRDEAuthLibrary",
    "vrdpauthlibrary": "VRDEAuthLibrary",
    "vrdeextpack": "defaultVRDEExtPack",
    "websrvauthlibrary": "webServiceAuthLibrary",
    "loghistorycount": "LogHistoryCount",
    "controlendpoint": "controlEndpoint",
}
_PROPERTY_LABELS = (
    ("machinefolder", "Default machine folder"),
    ("vrdeauthlibrary", "VRDE auth library"),
    ("vrdeextpack", "Default VRDE ext. pack"),
    ("websrvauthlibrary", "Webservice auth. library"),
    ("loghistorycount", "Log history count"),
    ("controlendpoint", "Control endpoint"),
)
_CONTROLLER_TYPES = {"ide": ("PIIX4", ("PIIX3", "PIIX4", "ICH6"), 2, 1),
                     "sata": ("IntelAhci", ("IntelAhci",), 30, 1)}


def _as_uuid(text) -> str | None:
    return text.strip("{}").lower() if isinstance(text, str) and _UUID.fullmatch(text) else None


def _not_found(vm) -> ManagerError:
    return ManagerError(OBJECT_NOT_FOUND, f"Could not find a registered machine named '{vm}'")


def _random_mac() -> str:
    return "080027" + os.urandom(3).hex().upper()     # VirtualBox's OUI


def _iso_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Settings:
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

    # -- lookups ------------------------------------------------------------------------------

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
            raise _not_found(vm)
        wanted = _as_uuid(vm)
        if wanted:
            entry = tx.registry.machine_entry(wanted)
            if entry:
                return entry, tx.machine_at(entry.src)
        for entry, machine in self._machines(tx):
            if machine is not None and machine.name == vm:
                return entry, machine
        raise _not_found(vm)

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

    def _find_medium(self, reg: Registry, kind: str, target) -> Medium:
        wanted = _as_uuid(target)
        medium = reg.medium(wanted) if wanted else None
        if medium is None and isinstance(target, str) and target:
            medium = reg.medium_at(os.path.abspath(target))
        if medium is None or medium.kind != kind:
            if wanted:
                raise ManagerError(OBJECT_NOT_FOUND, f"Could not find a registered medium with "
                                                     f"UUID {{{wanted}}}")
            raise ManagerError(OBJECT_NOT_FOUND, f"Could not find file for the medium "
                                                 f"'{os.path.abspath(str(target))}' (VERR_FILE_NOT_FOUND)")
        return medium

    def _register_medium(self, reg: Registry, kind: str, path: str) -> Medium:
        """The registered medium at path, registering it first (as VirtualBox opens a medium
        named by path)."""
        medium = reg.medium_at(path)
        if medium is not None:
            if medium.kind != kind:
                what = "a DVD image" if medium.kind == "dvd" else "a hard disk"
                raise ManagerError(E_INVALIDARG, f"The medium '{path}' is registered as {what}")
            return medium
        uuid, fmt = media.probe(path, kind)
        clash = reg.medium(uuid)
        if clash is not None:
            raise ManagerError(INVALID_OBJECT_STATE, f"Cannot register the hard disk '{path}' "
                               f"{{{uuid}}} because a hard disk '{clash.location}' with UUID "
                               f"{{{uuid}}} already exists")
        medium = Medium(uuid, path, kind, fmt)
        reg.media.append(medium)
        return medium

    # -- settings ops (docs/control-api.md) ---------------------------------------------------

    def list(self, what: str) -> list:
        if what == "ostypes":
            return [t.as_dict() for t in ostypes.OS_TYPES]
        with self.store.transaction(write=False) as tx:
            if what in ("vms", "runningvms"):
                rows = []
                for entry, m in self._machines(tx):
                    if what == "runningvms" and self.vm_state(entry.uuid) in STOPPED_STATES:
                        continue
                    rows.append({"name": m.name if m else "<inaccessible>", "uuid": entry.uuid})
                return rows
            if what in ("hdds", "dvds"):
                return self._list_media(tx, "hdd" if what == "hdds" else "dvd")
            if what == "systemproperties":
                return self._system_properties(tx.registry)
        raise ManagerError(E_INVALIDARG, f"Unknown list type '{what}' (ostypes, vms, runningvms, "
                                         "hdds, dvds or systemproperties)")

    def _list_media(self, tx: Transaction, kind: str) -> list[dict]:
        machines = [m for _, m in self._machines(tx) if m is not None]
        rows = []
        for medium in tx.registry.media:
            if medium.kind != kind:
                continue
            size = media.capacity_bytes(medium.location, medium.format)
            rows.append({"uuid": medium.uuid, "path": medium.location, "format": medium.format,
                         "state": "created" if size is not None else "inaccessible",
                         "capacity_mb": (size or 0) // MiB, "type": medium.type,
                         "in_use_by": [m.name for m in machines if medium.uuid in m.attached_media()]})
        return rows

    def _system_properties(self, reg: Registry) -> list[dict]:
        defaults = {"machinefolder": self._machine_folder(reg),
                    "vrdeauthlibrary": launch.DEFAULT_AUTH_LIBRARY, "loghistorycount": "3"}
        rows = [{"key": key, "label": label,
                 "value": reg.properties.get(PROPERTIES[key]) or defaults.get(key, "")}
                for key, label in _PROPERTY_LABELS]
        rows += [{"key": "minguestram", "label": "Minimum guest RAM size",
                  "value": f"{changes_mod.MIN_RAM_MB} Megabytes"},
                 {"key": "maxguestram", "label": "Maximum guest RAM size",
                  "value": f"{changes_mod.MAX_RAM_MB} Megabytes"},
                 {"key": "maxguestcpus", "label": "Maximum guest CPU count",
                  "value": str(changes_mod.MAX_CPUS)},
                 {"key": "defaulthdformat", "label": "Default hard disk format", "value": "VDI"}]
        return rows

    def createvm(self, name, ostype=None, register=False, basefolder=None) -> dict:
        if not isinstance(name, str) or not name.strip() or "/" in name or name in (".", ".."):
            raise ManagerError(E_INVALIDARG, f"Invalid machine name '{name}'")
        os_type = None
        if ostype is not None:
            os_type = ostypes.find(ostype) if isinstance(ostype, str) else None
            if os_type is None:
                raise ManagerError(OBJECT_NOT_FOUND, f"Guest OS type '{ostype}' is invalid")
        with self.store.transaction() as tx:
            base = os.path.abspath(basefolder) if basefolder else self._machine_folder(tx.registry)
            folder = os.path.join(base, name)
            path = os.path.join(folder, name + ".vbox")
            if os.path.lexists(path):
                raise ManagerError(FILE_ERROR, f"Machine settings file '{path}' already exists")
            if register and self._name_taken(tx, name):
                raise ManagerError(INVALID_OBJECT_STATE, f"A machine named '{name}' is already "
                                                         "registered")
            m = Machine(uuid=str(uuidlib.uuid4()), name=name, last_state_change=_iso_now())
            for nic in m.nics:
                nic.mac = _random_mac()
            if os_type is not None:
                m.ostype = os_type.id
                m.memory_mb, m.vram_mb = os_type.ram_mb, os_type.vram_mb
                m.acpi, m.ioapic, m.rtc_utc = True, os_type.ioapic, os_type.rtc_utc
                for nic in m.nics:
                    nic.adapter = os_type.nic
            tx.put_machine(path, m)
            tx.after.append(lambda: make_folder(os.path.join(folder, "Logs")))
            if register:
                tx.registry.machines.append(MachineEntry(m.uuid, path))
                tx.registry_dirty = True
        return {"uuid": m.uuid, "name": m.name, "settings_file": path}

    def registervm(self, path) -> dict:
        if not isinstance(path, str) or not path:
            raise ManagerError(E_INVALIDARG, "Give the path of a .vbox settings file")
        path = os.path.abspath(path)
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
            entry, m = self._find(tx, vm)
            state = self.vm_state(m.uuid)
            if state not in STOPPED_STATES:
                raise ManagerError(INVALID_VM_STATE, f"Cannot unregister the machine '{m.name}' "
                                                     f"while it is locked (state is {state})")
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
        return new_path

    def createmedium(self, filename, size_mb, kind="disk", format="VDI", variant="Standard",
                     remember=False, progress: Callable[[int], None] | None = None) -> dict:
        """Create a disk image and register it (VirtualBox 4+ registers even without
        --remember). The image is written outside the settings lock: a large fixed image takes
        long and must not stall every other settings request."""
        if media.kind_of(kind) != "hdd":
            raise ManagerError(E_INVALIDARG, "Only disk images can be created (createmedium disk)")
        if not isinstance(filename, str) or not filename:
            raise ManagerError(E_INVALIDARG, "Give the image's file name (--filename)")
        path = os.path.abspath(filename)
        with self.store.transaction(write=False) as tx:
            if tx.registry.medium_at(path) is not None:
                raise ManagerError(INVALID_OBJECT_STATE, f"Could not create the medium storage "
                                   f"unit '{path}': a medium with this location is already registered")
        uuid = media.create_disk(path, size_mb, format, variant, progress)
        try:
            with self.store.transaction() as tx:
                tx.registry.media.append(Medium(uuid, path, "hdd", "VDI"))
                tx.registry_dirty = True
        except BaseException:
            os.unlink(path)
            raise
        return {"uuid": uuid, "path": path}

    def openmedium(self, kind, path) -> dict:
        kind = media.kind_of(kind)
        if not isinstance(path, str) or not path:
            raise ManagerError(E_INVALIDARG, "Give the medium's file name")
        with self.store.transaction() as tx:
            before = len(tx.registry.media)
            medium = self._register_medium(tx.registry, kind, os.path.abspath(path))
            tx.registry_dirty = len(tx.registry.media) != before
        return {"uuid": medium.uuid, "path": medium.location}

    def closemedium(self, kind, target, delete=False) -> None:
        kind = media.kind_of(kind)
        with self.store.transaction() as tx:
            medium = self._find_medium(tx.registry, kind, target)
            users = self._users_of(tx, medium.uuid)
            if users:
                raise ManagerError(INVALID_OBJECT_STATE, f"Medium '{medium.location}' cannot be "
                                   f"closed because it is still attached to {len(users)} virtual "
                                   f"machines ({', '.join(m.name for m in users)})")
            if delete and kind != "hdd":
                raise ManagerError(E_INVALIDARG, "Only hard disk images can be deleted; close the "
                                                 "DVD image without --delete")
            tx.registry.media.remove(medium)
            tx.registry_dirty = True
            if delete:
                tx.after.append(lambda: _unlink_quietly(medium.location))

    def storagectl(self, vm, name, add=None, controller=None, remove=False) -> None:
        with self.store.transaction() as tx:
            entry, m = self._find(tx, vm)
            if not isinstance(name, str) or not name:
                raise ManagerError(E_INVALIDARG, "Give the storage controller's name (--name)")
            self._require_mutable(m)
            existing = m.controller(name)
            if remove:
                if existing is None:
                    raise ManagerError(OBJECT_NOT_FOUND, f"Could not find a storage controller "
                                                         f"named '{name}'")
                m.controllers.remove(existing)
            else:
                bus = add.lower() if isinstance(add, str) else None
                if bus not in _CONTROLLER_TYPES:
                    raise ManagerError(E_INVALIDARG, f"Invalid --add argument '{add}' (ide or sata)")
                if existing is not None:
                    raise ManagerError(INVALID_OBJECT_STATE, f"Storage controller named '{name}' "
                                                             "already exists")
                default, allowed, ports, limit = _CONTROLLER_TYPES[bus]
                chip = next((t for t in allowed if t.lower() == str(controller or default).lower()), None)
                if chip is None:
                    raise ManagerError(E_INVALIDARG, f"Invalid --controller argument '{controller}' "
                                                     f"for an {bus.upper()} controller ({', '.join(allowed)})")
                if sum(c.bus == bus.upper() for c in m.controllers) >= limit:
                    raise ManagerError(INVALID_OBJECT_STATE, f"Too many storage controllers of "
                                       f"this type: a VM has at most {limit} {bus.upper()} controller")
                m.controllers.append(Controller(name, bus.upper(), chip, ports))
            tx.put_machine(entry.src, m)

    def storageattach(self, vm, storagectl, port, device, medium, type=None) -> None:
        with self.store.transaction() as tx:
            entry, m = self._find(tx, vm)
            self._require_mutable(m)
            c = m.controller(storagectl)
            if c is None:
                raise ManagerError(OBJECT_NOT_FOUND, f"Could not find a storage controller named "
                                                     f"'{storagectl}'")
            max_device = 1 if c.bus == "IDE" else 0
            for label, value, high in (("port", port, c.port_count - 1), ("device", device, max_device)):
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                    raise ManagerError(E_INVALIDARG, f"Invalid {label} number {value} (must be in "
                                                     f"range [0, {high}])")
            current = c.attachment_at(port, device)
            if medium == "none":
                if current is None:
                    raise ManagerError(OBJECT_NOT_FOUND, f"No storage device attached to device "
                                       f"slot {device} on port {port} of controller '{c.name}'")
                c.attachments.remove(current)
                tx.put_machine(entry.src, m)
                return
            kind = {"hdd": "hdd", "dvddrive": "dvd", "dvd": "dvd"}.get(str(type).lower())
            if kind is None:
                raise ManagerError(E_INVALIDARG, f"Invalid --type argument '{type}' (hdd or dvddrive)")
            if medium == "emptydrive":
                if kind != "dvd":
                    raise ManagerError(E_INVALIDARG, "--medium emptydrive is for DVD drives only "
                                                     "(--type dvddrive)")
                attached = None
            else:
                attached = self._medium_for_attach(tx, kind, medium)
                self._check_not_attached(tx, m, c, port, device, attached)
            if current is not None:
                c.attachments.remove(current)
            c.attachments.append(Attachment(port, device, kind, attached.uuid if attached else None))
            tx.put_machine(entry.src, m)

    def _medium_for_attach(self, tx: Transaction, kind: str, medium) -> Medium:
        if not isinstance(medium, str) or not medium:
            raise ManagerError(E_INVALIDARG, f"Invalid --medium argument '{medium}'")
        wanted = _as_uuid(medium)
        if wanted:
            found = tx.registry.medium(wanted)
            if found is None:
                raise ManagerError(OBJECT_NOT_FOUND, f"Could not find a registered medium with "
                                                     f"UUID {{{wanted}}}")
            if found.kind != kind:
                what = "a DVD image" if found.kind == "dvd" else "a hard disk"
                raise ManagerError(E_INVALIDARG, f"The medium '{found.location}' is {what}")
            return found
        before = len(tx.registry.media)
        found = self._register_medium(tx.registry, kind, os.path.abspath(medium))
        tx.registry_dirty = tx.registry_dirty or len(tx.registry.media) != before
        return found

    def _check_not_attached(self, tx: Transaction, m: Machine, c: Controller, port: int,
                            device: int, medium: Medium) -> None:
        for other in m.controllers:
            for a in other.attachments:
                if a.medium == medium.uuid and (other.name, a.port, a.device) != (c.name, port, device):
                    raise ManagerError(INVALID_OBJECT_STATE, f"Medium '{medium.location}' is already "
                                       f"attached to port {a.port}, device {a.device} of controller "
                                       f"'{other.name}' of this virtual machine")
        if medium.kind == "hdd":
            users = self._users_of(tx, medium.uuid, m.uuid)
            if users:
                raise ManagerError(INVALID_OBJECT_STATE, f"Medium '{medium.location}' is already "
                                   f"attached to the virtual machine '{users[0].name}'; a normal "
                                   "hard disk can be attached to one machine only")

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
            "nics": [{"slot": i + 1, "type": n.mode, "adapter": n.adapter, "mac": n.mac}
                     for i, n in enumerate(m.nics)],
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

    def setproperty(self, name, value) -> None:
        attribute = PROPERTIES.get(str(name).lower())
        if attribute is None:
            raise ManagerError(E_INVALIDARG, f"Invalid parameter '{name}'")
        if value is not None and not isinstance(value, str):
            raise ManagerError(E_INVALIDARG, f"Invalid value '{value}' for '{name}'")
        value = value or ""
        if value.lower() in ("default", "null"):
            value = ""
        if attribute == "defaultMachineFolder" and value and not os.path.isabs(value):
            raise ManagerError(E_INVALIDARG, f"The machine folder '{value}' is not an absolute path")
        if attribute == "LogHistoryCount" and value and not value.isdigit():
            raise ManagerError(E_INVALIDARG, f"Invalid log history count '{value}'")
        if attribute == "controlEndpoint" and value and not value.startswith("tcp://"):
            raise ManagerError(E_INVALIDARG, f"Invalid control endpoint '{value}' (tcp://ADDRESS:PORT)")
        with self.store.transaction() as tx:
            if value:
                tx.registry.properties[attribute] = value
            else:
                tx.registry.properties.pop(attribute, None)
            tx.registry_dirty = True

    # -- for the daemon -----------------------------------------------------------------------

    def _read(self, vm) -> tuple[MachineEntry, Machine, Registry]:
        with self.store.transaction(write=False) as tx:
            entry, m = self._find(tx, vm)
            return entry, m, tx.registry

    def vm_uuid(self, vm) -> str:
        return self._read(vm)[1].uuid

    def vm_name(self, vm) -> str:
        return self._read(vm)[1].name

    def vm_folder(self, vm) -> str:
        return os.path.dirname(self._read(vm)[0].src)

    def launch_spec(self, vm) -> dict:
        entry, m, reg = self._read(vm)
        return launch.launch_spec(m, reg, os.path.dirname(entry.src))

    def vrde_config(self, vm) -> dict:
        entry, m, reg = self._read(vm)
        return launch.vrde_config(m, reg, os.path.dirname(entry.src))

    def teleporter(self, vm) -> dict:
        t = self._read(vm)[1].teleporter
        return {"enabled": t.enabled, "port": t.port, "address": t.address,
                "password_hash": t.password}

    def cpuid(self, vm) -> dict[int, list[int]]:
        return {leaf: list(regs) for leaf, regs in self._read(vm)[1].cpuid.items()}


def _iso_mtime(path: str) -> str:
    stamp = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _delete_vm_files(settings_file: str, images: list[str]) -> None:
    """What `unregistervm --delete` removes, as VirtualBox does: the hard disk images no other VM
    uses, the settings file and its backup, Logs/, and the folder once nothing else is left in
    it (a user's own files there survive)."""
    for path in images:
        _unlink_quietly(path)
    folder = os.path.dirname(settings_file)
    for path in (settings_file, settings_file + "-prev"):
        _unlink_quietly(path)
    shutil.rmtree(os.path.join(folder, "Logs"), ignore_errors=True)
    try:
        os.rmdir(folder)
    except OSError:
        pass
