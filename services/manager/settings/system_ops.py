"""The ops on the settings home as a whole: `list` (VMs, running VMs, media, OS types, system
properties) and `setproperty`."""

from __future__ import annotations

import os

from .. import ostypes
from ..errors import E_INVALIDARG, ManagerError
from . import changes as changes_mod
from . import launch, media
from .base import STOPPED_STATES, SettingsBase
from .model import Registry
from .store import Transaction

MiB = 1 << 20
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


class SystemOps(SettingsBase):
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
