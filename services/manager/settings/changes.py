"""`modifyvm` as a pure function: check every change of a request, then apply them all to a
Machine, with VBoxManage's messages for bad values; which keys a running VM accepts."""

from __future__ import annotations

import copy
import os
import re

from services.ipc import vrde
from services.ipc.vrde import LIMIT_PROPERTIES, ConfigError, ConnectionLimits

from .. import ostypes
from ..errors import INVALID_VM_STATE, OBJECT_NOT_FOUND, ManagerError
from . import nic_changes, passwords
from .model import (
    ACCELS,
    AUTH_TYPES,
    BOOT_DEVICES,
    Machine,
)
from .values import invalid, on_off

MIN_RAM_MB, MAX_RAM_MB = 4, 2097152
MAX_CPUS = 64
MUTABLE_STATES = ("PoweredOff", "Aborted", "Saved")
TELEPORTER_ON_STATES = ("PoweredOff", "Aborted", "Teleported")



def machine_name(value) -> str:
    """A VM name as createvm and modifyvm --name take it: it names a folder and a file and shows in
    logs and listings, so no '/', no control characters (a newline would forge lines), not '.' or '..'."""
    name = value.strip() if isinstance(value, str) else ""
    if (not name or "/" in name or name in (".", "..") or len(name) > 255
            or any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)):
        shown = value.encode("unicode_escape").decode() if isinstance(value, str) else repr(value)
        raise invalid(f"Invalid machine name '{shown}'")
    return name


def normalize_ports(value) -> str:
    """A TCP/Ports value as VirtualBox stores it: "0" and "default" are 3389; otherwise a
    comma-separated list of ports and ranges low-high, each port 1..65535 (services/ipc/vrde.py)."""
    try:
        return vrde.normalize_ports(str(value))
    except ConfigError as error:
        raise invalid(f"Invalid port range '{str(value).strip()}': {error} (E_INVALIDARG)") from None



def _int(key: str, value, low: int, high: int, message: str | None = None) -> int:
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        for base in (10, 16 if value.strip().lower().startswith("0x") else 10):
            try:
                number = int(value.strip(), base)      # 256, 010, 0x3F8 as VBoxManage reads them
                break
            except ValueError:
                pass
    if number is None or not low <= number <= high:
        raise invalid(message or f"Invalid value '{value}' for '{key}' (must be in range "
                                 f"[{low}, {high}])")
    return number


def _choice(key: str, value, choices: tuple[str, ...], message: str) -> str:
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise invalid(message)


def _str(key: str, value) -> str:
    if not isinstance(value, str):
        raise invalid(f"Invalid value '{value}' for '{key}': expected a string")
    return value


def _set_property(m: Machine, name: str, value: str) -> None:
    if name == "TCP/Ports" and value:
        value = normalize_ports(value)
    if name == "VideoChannel/Quality" and value:
        value = str(_int(name, value, 10, 100, f"Invalid VideoChannel/Quality '{value}' (must be in "
                                               "range [10, 100])"))
    if name in LIMIT_PROPERTIES and value:
        try:
            ConnectionLimits.from_properties({name: value})
        except ConfigError as error:
            raise invalid(str(error)) from None
    if value:
        m.vrde.properties[name] = value
    else:
        m.vrde.properties.pop(name, None)


def _cpuid_leaf(leaf) -> int:
    try:
        number = int(leaf, 16) if isinstance(leaf, str) else int(leaf)
    except (TypeError, ValueError):
        number = -1
    if not 0 <= number <= 0xFFFFFFFF:
        raise invalid(f"Invalid CPUID leaf '{leaf}': expected a hexadecimal number")
    return number


def _apply_cpuid(m: Machine, value) -> None:
    if value is None:
        m.cpuid.clear()
        return
    if not isinstance(value, dict):
        raise invalid("Invalid value for 'cpuid': expected a map of leaf -> [eax, ebx, ecx, edx]")
    for leaf, regs in value.items():
        number = _cpuid_leaf(leaf)
        if regs is None:
            m.cpuid.pop(number, None)
            continue
        if (not isinstance(regs, (list, tuple)) or len(regs) != 4
                or not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r <= 0xFFFFFFFF
                           for r in regs)):
            raise invalid(f"Invalid CPUID values for leaf '{leaf}': expected four 32-bit "
                          "integers eax, ebx, ecx, edx")
        m.cpuid[number] = list(regs)


def _apply_uart1(m: Machine, value) -> None:
    if isinstance(value, str) and value.lower() == "off":
        m.uart1 = None
        return
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise invalid(f"Invalid --uart1 argument '{value}': expected off or <io> <irq>")
    io = _int("uart1", value[0], 0, 0xFFFF, f"Invalid --uart1 I/O base '{value[0]}'")
    irq = _int("uart1", value[1], 0, 255, f"Invalid --uart1 IRQ '{value[1]}'")
    m.uart1 = (io, irq)


def _apply_uartmode1(m: Machine, value) -> None:
    if isinstance(value, str) and value.lower() == "disconnected":
        m.uartmode1 = None
        return
    if (isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == "file"
            and isinstance(value[1], str) and os.path.isabs(value[1])):
        m.uartmode1 = ("file", value[1])
        return
    raise invalid(f"Invalid --uartmode1 argument '{value}': expected disconnected or file <absolute path>")


def _apply_one(m: Machine, key: str, value, state: str) -> None:
    if key == "memory":
        m.memory_mb = _int(key, value, MIN_RAM_MB, MAX_RAM_MB,
                           f"Invalid RAM size: {value} MB (must be in range [{MIN_RAM_MB}, "
                           f"{MAX_RAM_MB}] MB)")
    elif key == "cpus":
        m.cpus = _int(key, value, 1, MAX_CPUS, f"Invalid virtual CPU count: {value} (must be in "
                                               f"range [1, {MAX_CPUS}])")
    elif key == "acpi":
        m.acpi = on_off(key, value)
    elif re.fullmatch(r"boot[1-4]", key):
        m.boot[int(key[4]) - 1] = _choice(key, value, BOOT_DEVICES, f"Invalid boot device '{value}' "
                                          "(none, floppy, dvd, disk or net)")
    elif nic_changes.is_nic_key(key):
        nic_changes.apply(m, key, value)
    elif key == "vrde":
        m.vrde.enabled = on_off(key, value)
    elif key == "vrde_ports":
        m.vrde.properties["TCP/Ports"] = normalize_ports(value)
    elif key == "vrde_address":
        _set_property(m, "TCP/Address", _str(key, value))
    elif key == "vrde_auth_type":
        m.vrde.auth_type = _choice(key, value, AUTH_TYPES, f"Invalid --vrdeauthtype argument '{value}'")
    elif key == "vrde_auth_library":
        library = _str(key, value)
        m.vrde.auth_library = "" if library.lower() == "default" else library
    elif key == "vrde_multicon":
        m.vrde.multicon = on_off(key, value)
    elif key == "vrde_reusecon":
        m.vrde.reusecon = on_off(key, value)
    elif key == "vrde_video_channel":
        m.vrde.properties["VideoChannel/Enabled"] = "true" if on_off(key, value) else "false"
    elif key == "vrde_video_channel_quality":
        quality = _int(key, value, 10, 100, f"Invalid --vrdevideochannelquality argument '{value}' "
                                            "(must be in range [10, 100])")
        m.vrde.properties["VideoChannel/Quality"] = str(quality)
    elif key == "vrde_properties":
        if not isinstance(value, dict):
            raise invalid("Invalid value for 'vrde_properties': expected a map of name -> value")
        for name, prop in value.items():
            if not isinstance(name, str) or not name or "=" in name:
                raise invalid(f"Invalid --vrdeproperty argument '{name}'")
            _set_property(m, name, "" if prop is None else _str(name, prop))
    elif key == "teleporter":
        enable = on_off(key, value)
        if enable and state not in TELEPORTER_ON_STATES:
            raise ManagerError(INVALID_VM_STATE, f"The machine is not powered off (state is {state})")
        m.teleporter.enabled = enable
    elif key == "teleporter_port":
        m.teleporter.port = _int(key, value, 0, 65535, f"Invalid port number {value}")
    elif key == "teleporter_address":
        m.teleporter.address = _str(key, value)
    elif key == "teleporter_password":
        m.teleporter.password = passwords.teleporter_hash("" if value is None else _str(key, value))
    elif key == "cpuid":
        _apply_cpuid(m, value)
    elif key == "usb":
        m.usb = on_off(key, value)
    elif key == "uart1":
        _apply_uart1(m, value)
    elif key == "uartmode1":
        _apply_uartmode1(m, value)
    elif key == "accel":
        m.accel = _choice(key, value, ACCELS, f"Invalid --accel argument '{value}' (kvm, tcg or auto)")
    elif key == "ostype":
        found = ostypes.find(value) if isinstance(value, str) else None
        if found is None:
            raise ManagerError(OBJECT_NOT_FOUND, f"Guest OS type '{value}' is invalid")
        m.ostype = found.id
    elif key == "name":
        m.name = machine_name(value)
    else:
        raise invalid(f"Unknown setting '{key}'")


def live_changeable(key: str) -> bool:
    """Keys VirtualBox also changes while the VM runs (the manager pushes VRDE changes live)."""
    return key.startswith(("vrde", "teleporter_"))


def apply_changes(m: Machine, changes, state: str = "PoweredOff", live=live_changeable) -> Machine:
    """A copy of m with every change applied, or ManagerError for the first bad one (m is left as
    it was). `live(key)` says which keys a running VM takes (controlvm's are others than modifyvm's)."""
    if not isinstance(changes, dict) or not changes:
        raise invalid("Nothing to change: give at least one setting")
    if state not in MUTABLE_STATES:
        frozen = [key for key in changes if not live(str(key))]
        if frozen:
            raise ManagerError(INVALID_VM_STATE, f"The machine is not mutable (state is {state})")
    new = copy.deepcopy(m)
    for key, value in changes.items():
        _apply_one(new, str(key), value, state)
    return new
