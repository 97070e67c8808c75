"""What an authentication library receives and answers: `authenticate(AuthRequest) -> AuthResult`.

A library is a Python module (or file) exporting that one function; see docs/vrdp-auth.md."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from services.ipc.vrde import VrdeConfig


class AuthResult(enum.Enum):
    DENIED = "access denied"
    GRANTED = "access granted"


@dataclass(frozen=True)
class AuthRequest:
    vm_uuid: str
    user: str
    password: str = field(repr=False)
    domain: str
    client_id: int
    config: VrdeConfig = field(repr=False)
    address: str = ""  # the client's IP address, for libraries that log or filter by it
