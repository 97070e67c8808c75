"""What modifyvm's value checks share: the error for an invalid argument, and VBoxManage's on/off
switches (also given as true/false or as booleans by the control API)."""

from __future__ import annotations

from ..errors import E_INVALIDARG, ManagerError


def invalid(message: str) -> ManagerError:
    return ManagerError(E_INVALIDARG, message)


def on_off(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("on", "off", "true", "false"):
        return value.lower() in ("on", "true")
    raise invalid(f"Invalid value '{value}' for '{key}': expected on or off")
