"""controlvm's network actions on a running VM (`setlinkstate<N>`, `natpf<N>`): what the VM's processes
are told (the cable to the vCPU process, NAT rules to the devices process), and undone if one refuses."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from services.ipc import ops
from services.manager.errors import E_FAIL, E_INVALIDARG, IPRT_ERROR, ManagerError
from services.manager.vmcontrol import vm_call

if TYPE_CHECKING:       # the daemon loads the settings (and their image code) only when it serves
    from services.manager.settings.model import Machine

log = logging.getLogger("headbox.manager")

ACTION = re.compile(r"(setlinkstate|natpf)([1-8])")


def changes_for(action: str, args: list) -> dict:
    """The settings change a controlvm network action makes (modifyvm's keys, docs/control-api.md):
    VirtualBox stores what controlvm changes, as if modifyvm had."""
    kind, n = ACTION.fullmatch(action).groups()
    if kind == "setlinkstate":
        if args not in (["on"], ["off"]):
            raise ManagerError(E_INVALIDARG, f"{action} takes on or off")
        return {f"cableconnected{n}": args[0] == "on"}
    if len(args) == 2 and args[0] == "delete" and isinstance(args[1], str):
        return {f"natpf{n}": [["delete", args[1]]]}
    if len(args) == 1 and isinstance(args[0], str):
        return {f"natpf{n}": [["add", args[0]]]}
    raise ManagerError(E_INVALIDARG, f"{action} takes a rule (name,tcp|udp,[hostip],hostport,[guestip],"
                                     "guestport) or delete and a rule's name")


def requests(old: Machine, new: Machine) -> list[tuple[str, object, object]]:
    """What the processes of a VM running `old` must be told so it runs `new`: (process, request,
    the request that undoes it). Only adapters the VM has: enabled ones, NAT rules of NAT ones."""
    found = []
    for slot, (before, after) in enumerate(zip(old.nics, new.nics)):
        if after.mode == "none":
            continue
        if before.cable != after.cable:
            found.append(("vcpu", ops.LinkState(slot=slot, up=after.cable),
                          ops.LinkState(slot=slot, up=before.cable)))
        if after.mode != "nat":
            continue
        was = {rule.name: rule for rule in before.nat.forwards}
        now = {rule.name: rule for rule in after.nat.forwards}
        for name, rule in was.items():
            if now.get(name) != rule:
                found.append(("devices", ops.PortForward(slot=slot, rule=name, delete=True),
                              ops.PortForward(slot=slot, rule=rule.text())))
        for name, rule in now.items():
            if was.get(name) != rule:
                found.append(("devices", ops.PortForward(slot=slot, rule=rule.text()),
                              ops.PortForward(slot=slot, rule=name, delete=True)))
    return found


def push(vm_id: str, old: Machine, new: Machine, send=None) -> None:
    """Tell a running VM its new network settings; if a process refuses one (a host port in use),
    what was already sent is undone and the refusal is the user's error, so the VM and its stored
    settings stay as they were. `send` is vm_call (tests give their own)."""
    send = send or vm_call
    done = []
    try:
        for process, request, undo in requests(old, new):
            send(vm_id, process, request)
            done.append((process, undo))
    except ManagerError as error:
        for process, undo in reversed(done):
            try:
                send(vm_id, process, undo)
            except ManagerError as undo_error:
                log.warning("VM %s: undoing a network change failed: %s", vm_id, undo_error.message)
        # The processes refuse only what the host cannot do (a port in use): a host failure.
        raise ManagerError(IPRT_ERROR if error.code == E_FAIL else error.code, error.message) from None
