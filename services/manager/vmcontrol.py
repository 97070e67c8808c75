"""Requests to a running VM's processes on their control sockets, and what a killed VM leaves behind.

The manager's side of services.ipc's control channel: one typed request, its reply, or a ManagerError."""

from __future__ import annotations

import zmq

from services.ipc.control import ControlError, ControlUnavailable, call
from services.ipc.naming import endpoint
from services.manager.errors import E_FAIL, E_INVALIDARG, IPRT_ERROR, ManagerError


def keyboard_events(args: list) -> list[list]:
    """keyboardputscancode's hex bytes (set 1; E0 prefixes an extended key, bit 7 a release) to the
    vCPU's [code, extended, pressed] events."""
    events, extended = [], False
    for arg in args:
        try:
            value = int(str(arg), 16)
        except ValueError:
            raise ManagerError(E_INVALIDARG, f"Error: '{arg}' is not a hex byte") from None
        if not 0 <= value <= 0xFF:
            raise ManagerError(E_INVALIDARG, f"Error: '{arg}' is not a hex byte")
        if value == 0xE0:
            extended = True
            continue
        events.append([value & 0x7F, extended, not value & 0x80])
        extended = False
    if not events:
        raise ManagerError(E_INVALIDARG, "keyboardputscancode needs at least one scancode")
    return events


def vm_call(vm_id: str, process: str, message, timeout_ms: int = 5000) -> dict:
    """One request on a VM process's control socket; ManagerError when it does not answer or fails."""
    try:
        return call(endpoint(vm_id, f"control-{process}"), message, timeout_ms)
    except ControlUnavailable:
        raise ManagerError(IPRT_ERROR, f"the {process} process of the VM did not answer {message.op}") from None
    except ControlError as error:
        raise ManagerError(E_FAIL, str(error)) from None
    except zmq.ZMQError as error:
        raise ManagerError(IPRT_ERROR, f"the VM's {process} control socket: {error.strerror}") from None

