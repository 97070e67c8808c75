"""The errors the manager reports: VirtualBox's result-code names with one line for the user.

Every layer raises ManagerError; the control socket carries (code, message); the CLI prints the message."""

from __future__ import annotations

E_INVALIDARG = "E_INVALIDARG"
E_ACCESSDENIED = "E_ACCESSDENIED"
E_FAIL = "E_FAIL"
OBJECT_NOT_FOUND = "VBOX_E_OBJECT_NOT_FOUND"
FILE_ERROR = "VBOX_E_FILE_ERROR"
INVALID_OBJECT_STATE = "VBOX_E_INVALID_OBJECT_STATE"
INVALID_VM_STATE = "VBOX_E_INVALID_VM_STATE"
IPRT_ERROR = "VBOX_E_IPRT_ERROR"

CODES = (E_INVALIDARG, E_ACCESSDENIED, E_FAIL, OBJECT_NOT_FOUND, FILE_ERROR, INVALID_OBJECT_STATE,
         INVALID_VM_STATE, IPRT_ERROR)


class ManagerError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_wire(self) -> dict:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_wire(cls, error: dict) -> ManagerError:
        return cls(str(error.get("code", E_FAIL)), str(error.get("message", "unknown error")))
