"""Requests to a running VM's processes on their control sockets, and what a killed VM leaves behind.

The manager's side of services.ipc's control channel: one request, one reply, or a ManagerError."""

from __future__ import annotations

import os

import zmq

from services.headless import VCPU_REGIONS
from services.ipc.messages import CONTROL_VERSION, pack, unpack
from services.ipc.naming import endpoint, shm_name
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


def control_request(vm_id: str, channel: str, op: str, timeout_ms: int = 5000, **fields) -> dict:
    """One request on a VM service's control socket; ManagerError when it does not answer or fails."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 10)    # a service binding its socket right now answers sooner
    try:
        sock.connect(endpoint(vm_id, channel))
        sock.send(pack({"v": CONTROL_VERSION, "op": op, **fields}))
        if not sock.poll(timeout_ms):
            raise ManagerError(IPRT_ERROR, f"the {channel[len('control-'):]} process of the VM did not answer {op}")
        reply = unpack(sock.recv())
    except zmq.ZMQError as error:
        raise ManagerError(IPRT_ERROR, f"the VM's {channel} socket: {error.strerror}") from None
    finally:
        sock.close()
    if not reply.get("ok"):
        raise ManagerError(E_FAIL, str(reply.get("error", f"{op} failed")))
    return reply


def sweep_shared_memory(vm_id: str) -> None:
    # A killed vCPU process leaves its regions behind; the VM's next start would take them for a
    # running VM's.
    for region in VCPU_REGIONS:
        try:
            os.unlink(f"/dev/shm/{shm_name(vm_id, region)}")
        except FileNotFoundError:
            pass
