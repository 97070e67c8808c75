"""A running VM's processes as a teleport drives them: requests on the vCPU and device control
sockets, each answered or turned into TeleportError with the process's own message."""

from __future__ import annotations

from services.ipc.control import ControlClient, ControlError, ControlUnavailable
from services.ipc.naming import endpoint


class TeleportError(Exception):
    """Why a teleport failed, in one line for the user."""


class VmControl:
    def __init__(self, vm_id: str, timeout_ms: int = 30000):
        self.vm_id = vm_id
        self._clients = {process: ControlClient(endpoint(vm_id, f"control-{process}"), timeout_ms=timeout_ms)
                         for process in ("vcpu", "devices")}

    def _call(self, process: str, what: str, message) -> dict:
        try:
            return self._clients[process].call(message)
        except ControlUnavailable as error:
            raise TeleportError(f"the {what} process of VM {self.vm_id} did not answer '{message.op}' "
                                f"({error})") from None
        except ControlError as error:
            raise TeleportError(f"{what} '{message.op}': {error}") from None

    def vcpu(self, message) -> dict:
        return self._call("vcpu", "vCPU", message)

    def devices(self, message) -> dict:
        return self._call("devices", "device", message)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
