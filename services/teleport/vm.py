"""A running VM's processes as a teleport drives them: requests on the vCPU and device control
sockets, each answered or turned into TeleportError with the process's own message."""

from __future__ import annotations

import zmq

from services.ipc.control import ControlClient
from services.ipc.naming import endpoint


class TeleportError(Exception):
    """Why a teleport failed, in one line for the user."""


class VmControl:
    def __init__(self, vm_id: str, timeout_ms: int = 30000):
        self.vm_id = vm_id
        self.timeout_ms = timeout_ms
        self.vcpu = self._client("vcpu")
        self.devices = self._client("devices")

    def _client(self, process: str):
        return ControlClient(endpoint(self.vm_id, f"control-{process}"), timeout_ms=self.timeout_ms)

    def _ask(self, process: str, what: str, op: str, **fields) -> dict:
        client = getattr(self, process)
        try:
            reply = client.request(op, **fields)
        except zmq.ZMQError as error:
            # A REQ socket that missed its reply cannot send again: start a fresh one.
            client.close()
            setattr(self, process, self._client(process))
            raise TeleportError(f"the {what} process of VM {self.vm_id} did not answer '{op}' ({error})") from None
        if not reply.get("ok"):
            raise TeleportError(f"{what} '{op}': {reply.get('error', 'failed')}")
        return reply

    def vcpu_op(self, op: str, **fields) -> dict:
        return self._ask("vcpu", "vCPU", op, **fields)

    def devices_op(self, op: str, **fields) -> dict:
        return self._ask("devices", "device", op, **fields)

    def close(self) -> None:
        self.vcpu.close()
        self.devices.close()
