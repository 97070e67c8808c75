"""modifyvm's network adapter keys (`nic<N>`, `nictype<N>`, `macaddress<N>`, `cableconnected<N>`
and the NAT's `natpf<N>`, `natnet<N>`, ...): each value checked, then applied to a Machine's Nic."""

from __future__ import annotations

import dataclasses
import os
import re

from services.ipc.network import NetworkError, PortForward, nat_addresses, parse_mac

from .model import NIC_MODES, NIC_TYPES, Machine, Nic
from .values import invalid, on_off

KEY = re.compile(r"(nic|nictype|macaddress|cableconnected|natpf|natnet|natdnshostresolver|natdnsproxy"
                 r"|nattftpprefix|nattftpfile)([1-8])")
CONTROLVM_KEYS = ("cableconnected", "natpf")    # what controlvm changes on a running VM
VIRTUALBOX_OUI = "080027"
# VirtualBox names a network when the adapter is attached to it without one.
DEFAULT_NETWORK_NAMES = {"intnet": "intnet", "natnetwork": "NatNetwork"}



def is_nic_key(key: str) -> bool:
    return KEY.fullmatch(key) is not None


def controlvm_key(key: str) -> bool:
    """Keys a running VM takes through controlvm (setlinkstate<N>, natpf<N>), as VirtualBox's
    console does; modifyvm refuses every adapter key while the VM runs."""
    match = KEY.fullmatch(key)
    return match is not None and match[1] in CONTROLVM_KEYS


def random_mac(taken=()) -> str:
    """VirtualBox's way: its OUI and three random bytes, unlike every MAC in `taken` (the VM's other
    adapters: two cards with one address would confuse every switch and the guest)."""
    while True:
        mac = VIRTUALBOX_OUI + os.urandom(3).hex().upper()
        if mac not in taken:
            return mac


def apply(m: Machine, key: str, value) -> None:
    """One adapter key of a modifyvm request applied to m, or ManagerError with the reason."""
    kind, number = KEY.fullmatch(key).groups()
    nic = m.nics[int(number) - 1]
    APPLY[kind](m, nic, int(number), value)



def _str(key: str, value) -> str:
    if not isinstance(value, str):
        raise invalid(f"Invalid value '{value}' for '{key}': expected a string")
    return value


def _mode(m: Machine, nic: Nic, n: int, value) -> None:
    if not isinstance(value, str) or value.lower() not in NIC_MODES:
        raise invalid(f"Invalid type '{value}' specified for NIC {n} ({', '.join(NIC_MODES)})")
    nic.mode = value.lower()
    if nic.mode in DEFAULT_NETWORK_NAMES:
        nic.networks.setdefault(nic.mode, DEFAULT_NETWORK_NAMES[nic.mode])


def _type(m: Machine, nic: Nic, n: int, value) -> None:
    chosen = next((t for t in NIC_TYPES if isinstance(value, str) and value.lower() == t.lower()), None)
    if chosen is None:
        raise invalid(f"Invalid NIC type '{value}' specified for NIC {n} ({', '.join(NIC_TYPES)})")
    nic.adapter = chosen


def _mac(m: Machine, nic: Nic, n: int, value) -> None:
    others = {other.mac for other in m.nics if other is not nic}
    if isinstance(value, str) and value.lower() == "auto":
        nic.mac = random_mac(others)
        return
    try:
        mac = parse_mac(_str(f"macaddress{n}", value)).hex().upper()
    except NetworkError as error:
        raise invalid(f"NIC {n}: {error}") from None
    if mac in others:
        raise invalid(f"NIC {n}: MAC address {mac} is the address of another adapter of this machine")
    nic.mac = mac


def _cable(m: Machine, nic: Nic, n: int, value) -> None:
    nic.cable = on_off(f"cableconnected{n}", value)


def _network(m: Machine, nic: Nic, n: int, value) -> None:
    text = _str(f"natnet{n}", value).strip()
    if text.lower() == "default":
        nic.nat.network = ""
        return
    address, slash, prefix = text.partition("/")
    octets = address.split(".")
    if slash and 1 <= len(octets) < 4:
        address = ".".join(octets + ["0"] * (4 - len(octets)))    # VirtualBox's "192.168/16"
    try:
        net = nat_addresses(f"{address}{slash}{prefix}")
    except NetworkError as error:
        raise invalid(f"NIC {n}: {error}") from None
    nic.nat.network = f"{net['network']}/{net['prefix']}"


def _host_resolver(m: Machine, nic: Nic, n: int, value) -> None:
    nic.nat.dns_host_resolver = on_off(f"natdnshostresolver{n}", value)


def _dns_proxy(m: Machine, nic: Nic, n: int, value) -> None:
    nic.nat.dns_proxy = on_off(f"natdnsproxy{n}", value)


def _tftp_prefix(m: Machine, nic: Nic, n: int, value) -> None:
    nic.nat.tftp_prefix = _str(f"nattftpprefix{n}", value)


def _tftp_file(m: Machine, nic: Nic, n: int, value) -> None:
    nic.nat.tftp_file = _str(f"nattftpfile{n}", value)


# -- port forwarding ----------------------------------------------------------------------------

def forward_operations(key: str, value) -> list[tuple[str, str]]:
    """A `natpf<N>` value as (operation, text) pairs in order: a rule's text alone, or a list of
    ["add", rule] and ["delete", name] (one modifyvm may add and delete several)."""
    items = [value] if isinstance(value, str) else value
    operations = []
    for item in items if isinstance(items, (list, tuple)) else [None]:
        if isinstance(item, str):
            item = ["add", item]
        if (not isinstance(item, (list, tuple)) or len(item) != 2 or item[0] not in ("add", "delete")
                or not isinstance(item[1], str)):
            raise invalid(f"Invalid value for '{key}': expected a rule, or a list of [\"add\", rule] "
                          "and [\"delete\", name]")
        operations.append((item[0], item[1]))
    return operations


def parse_rule(text: str) -> PortForward:
    """VBoxManage's rule text; without a name the rule is named as VirtualBox names it
    (tcp_2222_22: protocol, host port, guest port)."""
    try:
        if text.split(",", 1)[0].strip() == "" and text.count(",") == 5:
            unnamed = PortForward.parse("unnamed" + text)
            return dataclasses.replace(unnamed, name=f"{unnamed.protocol}_{unnamed.host_port}_"
                                                     f"{unnamed.guest_port}")
        return PortForward.parse(text)
    except NetworkError as error:
        raise invalid(str(error)) from None


def add_rule(nic: Nic, rule: PortForward) -> None:
    for other in nic.nat.forwards:
        if other.name == rule.name:
            raise invalid("A NAT rule of this name already exists")
        if (other.host_ip, other.host_port, other.protocol) == (rule.host_ip, rule.host_port, rule.protocol):
            raise invalid("A NAT rule for this host port and this host IP already exists")
    nic.nat.forwards = sorted([*nic.nat.forwards, rule], key=lambda r: r.name)


def delete_rule(nic: Nic, name: str) -> None:
    kept = [rule for rule in nic.nat.forwards if rule.name != name]
    if len(kept) == len(nic.nat.forwards):
        raise invalid("A NAT rule of this name does not exist")
    nic.nat.forwards = kept


def _forwards(m: Machine, nic: Nic, n: int, value) -> None:
    for operation, text in forward_operations(f"natpf{n}", value):
        if operation == "add":
            add_rule(nic, parse_rule(text))
        else:
            delete_rule(nic, text)


APPLY = {"nic": _mode, "nictype": _type, "macaddress": _mac, "cableconnected": _cable, "natpf": _forwards,
         "natnet": _network, "natdnshostresolver": _host_resolver, "natdnsproxy": _dns_proxy,
         "nattftpprefix": _tftp_prefix, "nattftpfile": _tftp_file}
