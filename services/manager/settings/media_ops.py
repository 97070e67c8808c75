"""The ops on media and storage: create, open (register) and close disk and DVD images, add and
remove storage controllers, attach and detach media."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import E_INVALIDARG, INVALID_OBJECT_STATE, OBJECT_NOT_FOUND, ManagerError
from . import media
from .base import SettingsBase, absolute, as_uuid, unlink_quietly
from .model import Attachment, Controller, Machine, Medium, Registry
from .store import Transaction

_KIND_WORDS = {"hdd": "hard disk", "dvd": "DVD image"}
_CONTROLLER_TYPES = {"ide": ("PIIX4", ("PIIX3", "PIIX4", "ICH6"), 2, 1),
                     "sata": ("IntelAhci", ("IntelAhci",), 30, 1)}


def _slot_number(label: str, value, high: int) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ManagerError(E_INVALIDARG, f"Invalid {label} number {value} (must be in range [0, {high}])")
    return value


class MediaOps(SettingsBase):
    def _find_medium(self, reg: Registry, kind: str, target) -> Medium | None:
        """The registered medium a UUID or path names; None for a path that is not registered."""
        wanted = as_uuid(target)
        if wanted:
            medium = reg.medium(wanted)
            if medium is None:
                raise ManagerError(OBJECT_NOT_FOUND, f"Could not find a registered medium with "
                                                     f"UUID {{{wanted}}}")
        else:
            if not isinstance(target, str) or not target:
                raise ManagerError(E_INVALIDARG, f"Invalid medium '{target}': give a UUID or a path")
            medium = reg.medium_at(absolute(target, "medium"))
            if medium is None:
                return None
        if medium.kind != kind:
            raise ManagerError(E_INVALIDARG, f"The medium '{medium.location}' is registered as "
                                             f"a {_KIND_WORDS[medium.kind]}")
        return medium

    def _register_medium(self, reg: Registry, kind: str, path: str) -> Medium:
        """The registered medium at path, registering it first (as VirtualBox opens a medium
        named by path)."""
        medium = reg.medium_at(path)
        if medium is not None:
            if medium.kind != kind:
                raise ManagerError(E_INVALIDARG, f"The medium '{path}' is registered as "
                                                 f"a {_KIND_WORDS[medium.kind]}")
            return medium
        uuid, fmt = media.probe(path, kind)
        clash = reg.medium(uuid)
        if clash is not None:
            what = _KIND_WORDS[kind]
            raise ManagerError(INVALID_OBJECT_STATE, f"Cannot register the {what} '{path}' "
                               f"{{{uuid}}} because a {what} '{clash.location}' with UUID "
                               f"{{{uuid}}} already exists")
        medium = Medium(uuid, path, kind, fmt)
        reg.media.append(medium)
        return medium

    def createmedium(self, filename, size_mb, kind="disk", format="VDI", variant="Standard",
                     remember=False, progress: Callable[[int], None] | None = None) -> dict:
        """Create a disk image and register it (VirtualBox 4+ registers even without
        --remember). The image is written outside the settings lock: a large fixed image takes
        long and must not stall every other settings request."""
        if media.kind_of(kind) != "hdd":
            raise ManagerError(E_INVALIDARG, "Only disk images can be created (createmedium disk)")
        path = absolute(filename, "image")
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
        path = absolute(path, "medium")
        with self.store.transaction() as tx:
            before = len(tx.registry.media)
            medium = self._register_medium(tx.registry, kind, path)
            tx.registry_dirty = len(tx.registry.media) != before
        return {"uuid": medium.uuid, "path": medium.location}

    def closemedium(self, kind, target, delete=False) -> None:
        kind = media.kind_of(kind)
        with self.store.transaction() as tx:
            medium = self._find_medium(tx.registry, kind, target)
            if medium is None:
                # VirtualBox opens a medium named by an unregistered path, then closes it.
                path = absolute(target, "medium")
                media.probe(path, kind)
                if delete and kind == "hdd":
                    tx.after.append(lambda: unlink_quietly(path))
                elif delete:
                    raise ManagerError(E_INVALIDARG, "Only hard disk images can be deleted; close "
                                                     "the DVD image without --delete")
                return
            users = self._users_of(tx, medium.uuid)
            if users:
                raise ManagerError(INVALID_OBJECT_STATE, f"Medium '{medium.location}' cannot be "
                                   f"closed because it is still attached to {len(users)} virtual "
                                   "machines")
            if delete and kind != "hdd":
                raise ManagerError(E_INVALIDARG, "Only hard disk images can be deleted; close the "
                                                 "DVD image without --delete")
            tx.registry.media.remove(medium)
            tx.registry_dirty = True
            if delete:
                tx.after.append(lambda: unlink_quietly(medium.location))

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
            port = _slot_number("port", port, c.port_count - 1)
            device = _slot_number("device", device, max_device)
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
        wanted = as_uuid(medium)
        if wanted:
            found = tx.registry.medium(wanted)
            if found is None:
                raise ManagerError(OBJECT_NOT_FOUND, f"Could not find a registered medium with "
                                                     f"UUID {{{wanted}}}")
            if found.kind != kind:
                raise ManagerError(E_INVALIDARG, f"The medium '{found.location}' is a "
                                                 f"{_KIND_WORDS[found.kind]}")
            return found
        before = len(tx.registry.media)
        found = self._register_medium(tx.registry, kind, absolute(medium, "medium"))
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
