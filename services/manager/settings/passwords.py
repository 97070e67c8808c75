"""The only forms in which passwords reach the settings files: VBoxAuthSimple's SHA-256 and the
teleporter's "#SHA-512##<hex>"; plain text never does."""

from __future__ import annotations

import hashlib
import re

from ..errors import E_INVALIDARG, ManagerError

EMPTY_PASSWORD = "[NULL]"
TELEPORTER_PREFIX = "#SHA-512#"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def auth_simple_hash(value: str) -> str:
    """What `setextradata VBoxAuthSimple/users/<name> <value>` stores: the lowercase hex SHA-256
    VBoxAuthSimple compares with; a value that already is one is kept, `[NULL]` is the empty
    password."""
    if _HEX64.fullmatch(value):
        return value.lower()
    if value == EMPTY_PASSWORD:
        value = ""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_teleporter_hash(value: str) -> bool:
    return value.startswith(TELEPORTER_PREFIX) and value.count("#") >= 3


def teleporter_hash(plain: str) -> str:
    """VirtualBox's HashedPw: "#SHA-512#" + salt (empty) + "#" + hex SHA-512; "" stays "" (no
    password)."""
    if not plain:
        return ""
    if is_teleporter_hash(plain):
        raise ManagerError(E_INVALIDARG, "Cannot set an already hashed password, only plain text "
                                         "password please")
    return TELEPORTER_PREFIX + "#" + hashlib.sha512(plain.encode("utf-8")).hexdigest()


def teleporter_check(stored: str, plain: str) -> bool:
    return bool(stored) and teleporter_hash(plain) == stored if plain else not stored
