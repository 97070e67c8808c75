"""The settings operations of docs/control-api.md, one method per op (each a transaction on the
settings files), and what the daemon needs to run a VM: launch_spec, vrde_config, ..."""

from __future__ import annotations

import os

from . import launch
from .media_ops import MediaOps
from .system_ops import SystemOps
from .vm_ops import VmOps


class Settings(VmOps, MediaOps, SystemOps):
    """One settings home. The daemon calls `getattr(settings, op)(**fields)`; every user mistake
    is a ManagerError and leaves the files as they were."""

    def vm_uuid(self, vm) -> str:
        return self._read(vm)[1].uuid

    def vm_name(self, vm) -> str:
        return self._read(vm)[1].name

    def vm_folder(self, vm) -> str:
        return os.path.dirname(self._read(vm)[0].src)

    def launch_spec(self, vm):
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
