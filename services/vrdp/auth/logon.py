"""The logon decision VirtualBox's console makes for a client (research/vrde.md §5.2-5.3), with its log lines.

null grants, guest is refused (no Guest Additions here), external asks the configured library."""

from __future__ import annotations

import logging

from services.vrdp.auth.base import AuthRequest, AuthResult
from services.vrdp.auth.library import LibraryError, load_library

log = logging.getLogger("headbox.vrdp.auth")

TYPE_NAMES = {"null": "Null", "external": "External", "guest": "Guest"}


def check_logon(request: AuthRequest) -> bool:
    config = request.config
    log.info("AUTH: User: [%s]. Domain: [%s]. Authentication type: [%s]", request.user, request.domain,
             TYPE_NAMES.get(config.auth_type, config.auth_type))
    granted = False
    if config.auth_type == "null":
        granted = True
    elif config.auth_type == "guest":
        log.info("AUTH: guest authentication is not supported: no Guest Additions")
    elif config.auth_type == "external":
        granted = _external(request)
    log.info("AUTH: Access granted." if granted else "AUTH: Access denied.")
    return granted


def _external(request: AuthRequest) -> bool:
    name = request.config.auth_library
    try:
        authenticate = load_library(name)
    except LibraryError as exc:
        log.error("Could not load the external authentication library '%s' (%s)", name, exc)
        return False
    try:
        result = authenticate(request)
    except Exception as exc:  # a user's library must not take the server down
        log.error("AUTH: external authentication module '%s' failed: %s: %s", name, type(exc).__name__, exc)
        return False
    if not isinstance(result, AuthResult):
        log.error("AUTH: external authentication module '%s' returned %r, not an AuthResult", name, result)
        return False
    log.info("AUTH: external authentication module returned '%s'", result.value)
    return result is AuthResult.GRANTED


ACCEPT, REFUSE, REPLACE = "accept", "refuse", "replace"


def multicon_decision(multicon: bool, reusecon: bool, logged_on: int) -> str:
    """What to do with a client that passed authentication while `logged_on` others are connected
    (research/vrde.md §4.7); checked after authentication so a bad client cannot evict a good one."""
    if multicon or logged_on == 0:
        return ACCEPT
    if reusecon:
        log.info("AUTH: Multiple connections are not enabled. Disconnecting existing client.")
        return REPLACE
    log.info("AUTH: Multiple connections are not enabled. Access denied.")
    return REFUSE
