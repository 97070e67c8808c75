"""VBoxAuthSimple: users and SHA-256 password hashes from the VM's VRDE settings (their `users`).

As VirtualBox's: the user name is what follows the first backslash; a missing user is denied; no salt."""

from __future__ import annotations

import hashlib
import hmac

from services.vrdp.auth.base import AuthRequest, AuthResult


def password_hash(password: str) -> str:
    """What VBoxManage internalcommands passwordhash prints: lowercase hex SHA-256 of the UTF-8 text."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def authenticate(request: AuthRequest) -> AuthResult:
    user = request.user.split("\\", 1)[1] if "\\" in request.user else request.user
    stored = request.config.users.get(user, "")
    if not stored:
        return AuthResult.DENIED
    if hmac.compare_digest(stored.encode(), password_hash(request.password).encode()):
        return AuthResult.GRANTED
    return AuthResult.DENIED
