"""VRDE authentication: the library interface (docs/vrdp-auth.md), the built-in libraries, and the
logon check VirtualBox's console does after a client's info PDU (research/vrde.md §5)."""

from services.vrdp.auth.base import AuthRequest, AuthResult
from services.vrdp.auth.library import load_library
from services.vrdp.auth.logon import (
           ACCEPT,
           REFUSE,
           REPLACE,
           check_logon,
           multicon_decision,
)
from services.vrdp.auth.throttle import FailureThrottle, Verdict

__all__ = ["ACCEPT", "REFUSE", "REPLACE", "AuthRequest", "AuthResult", "FailureThrottle", "check_logon",
           "load_library", "multicon_decision", "Verdict"]
