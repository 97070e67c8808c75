"""What the manager tells a VM's RDP server (docs/control-api.md): VrdeConfig, part of the VM's launch
spec (services/ipc/spec.py) and of the `configure` request, and the VRDE port-list syntax, parsed here
and nowhere else."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

AUTH_TYPES = ("null", "external", "guest")
DEFAULT_AUTH_LIBRARY = "VBoxAuth"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# The Client/Disable* switches VirtualBox reads once per client (research/vrde.md §4.5).
CLIENT_FEATURES = ("Client/DisableDisplay", "Client/DisableInput", "Client/DisableAudio",
                   "Client/DisableUSB", "Client/DisableClipboard", "Client/DisableRDPDR")


# Headbox's own VRDE properties bounding the connections one RDP server keeps (services/vrdp/admission.py):
# name -> (default, lowest, highest). VirtualBox has no such knobs; its server is in C and per-VM.
LIMIT_PROPERTIES = {
    "Limits/MaxConnections": (100, 1, 10000),              # every connection, logged on or not
    "Limits/MaxPendingConnections": (64, 1, 10000),        # not logged on yet
    "Limits/MaxPendingPerAddress": (16, 1, 10000),         # not logged on yet, from one address
    "Limits/LogonTimeout": (30, 1, 3600),                  # seconds from accepting to the logon
    "Limits/HandshakeStepTimeout": (10, 1, 3600),          # seconds of silence before the logon
}

DEFAULT_PORT = 3389
_PORT_ITEM = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


class ConfigError(ValueError):
    """A VRDE setting holds a bad value; the message is one line for the user."""


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    max_pending: int
    max_pending_per_address: int
    logon_timeout: float
    step_timeout: float

    @classmethod
    def from_properties(cls, properties: dict[str, str]) -> ConnectionLimits:
        """The Limits/* VRDE properties, defaults for those unset; ConfigError names a bad one."""
        values = []
        for name, (default, low, high) in LIMIT_PROPERTIES.items():
            text = properties.get(name, "")
            if text == "":
                values.append(default)
                continue
            if not text.isdigit() or not low <= int(text) <= high:
                raise ConfigError(f"VRDE property {name} '{text}' is not a whole number within {low}..{high}")
            values.append(int(text))
        return cls(*values)


def parse_ports(text: str) -> list[tuple[int, int]]:
    """VRDE's TCP/Ports: a comma-separated list of ports and ranges low-high ("5000,5010-5012"),
    each port 1..65535; "", "0" and "default" mean 3389. ConfigError names the first bad item."""
    text = str(text).strip()
    if text in ("", "0", "default"):
        return [(DEFAULT_PORT, DEFAULT_PORT)]
    ranges = []
    for item in text.split(","):
        match = _PORT_ITEM.fullmatch(item.strip())
        if not match:
            raise ConfigError(f"'{item.strip()}' in the port list '{text}' is neither a port nor a range "
                              "like 5010-5012")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not (1 <= low <= 65535 and 1 <= high <= 65535):
            raise ConfigError(f"'{item.strip()}' in the port list '{text}': ports are 1..65535")
        if high < low:
            raise ConfigError(f"'{item.strip()}' in the port list '{text}': a range goes from low to high")
        ranges.append((low, high))
    return ranges


def normalize_ports(text: str) -> str:
    """The port list as it is stored: items without spaces, 3389 for the defaults."""
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in parse_ports(text))


def ports_in_order(text: str) -> Iterator[int]:
    """Every port of a valid list, in the order VirtualBox tries them."""
    for low, high in parse_ports(text):
        yield from range(low, high + 1)


@dataclass
class VrdeConfig:
    vm_name: str = ""
    vm_uuid: str = ""
    enabled: bool = False
    ports: str = "3389"
    address: str = ""
    auth_type: str = "null"
    auth_library: str = DEFAULT_AUTH_LIBRARY
    auth_timeout_ms: int = 5000
    multicon: bool = False
    reusecon: bool = False
    video_channel: bool = False
    video_channel_quality: int = 75
    properties: dict[str, str] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    state_dir: str = ""

    @classmethod
    def listening(cls, port: int, vm_name: str = "", address: str = "127.0.0.1", **settings) -> VrdeConfig:
        """An enabled server on one port, by default on loopback only (the demo runner, tests)."""
        return cls(vm_name=vm_name, enabled=True, ports=str(port), address=address, **settings)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        for name, kind in (("vm_name", str), ("vm_uuid", str), ("ports", str), ("address", str),
                           ("auth_type", str), ("auth_library", str), ("state_dir", str)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"VRDE: '{name}' must be a string")
        for name in ("enabled", "multicon", "reusecon", "video_channel"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"VRDE: '{name}' must be true or false")
        for name in ("auth_timeout_ms", "video_channel_quality"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"VRDE: '{name}' must be an integer")
        if self.auth_type not in AUTH_TYPES:
            raise ConfigError(f"VRDE: auth_type '{self.auth_type}' is not one of {', '.join(AUTH_TYPES)}")
        if not self.auth_library:
            raise ConfigError("VRDE: auth_library is empty")
        if not 0 <= self.auth_timeout_ms <= 600_000:
            raise ConfigError(f"VRDE: auth_timeout_ms {self.auth_timeout_ms} is not within 0..600000")
        if not 10 <= self.video_channel_quality <= 100:
            raise ConfigError(f"VRDE: video_channel_quality {self.video_channel_quality} is not within 10..100")
        parse_ports(self.ports)
        for name in ("properties", "features", "users"):
            mapping = getattr(self, name)
            if not isinstance(mapping, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
                raise ConfigError(f"VRDE: '{name}' must map strings to strings")
        ConnectionLimits.from_properties(self.properties)
        for user, digest in self.users.items():
            if not SHA256_HEX.fullmatch(digest):
                raise ConfigError(f"VRDE: the password of user '{user}' is not a lowercase hex SHA-256")

    def feature(self, name: str) -> bool:
        """A Client/Disable* switch is on only for the exact value "1" (a VRDE property wins over extradata)."""
        value = self.properties.get(name)
        if value is None:
            value = self.features.get(name)
        return value == "1"

    def limits(self) -> ConnectionLimits:
        return ConnectionLimits.from_properties(self.properties)

    def client_features(self) -> dict[str, bool]:
        return {name: self.feature(name) for name in CLIENT_FEATURES}

    def listener_key(self) -> tuple:
        """What the listening sockets depend on: a change of any of it rebinds them."""
        security = {k: v for k, v in self.properties.items() if k.startswith("Security/")}
        return (self.enabled, self.ports, self.address, tuple(sorted(security.items())), self.state_dir)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> VrdeConfig:
        if not isinstance(data, dict):
            raise ConfigError("VRDE: expected a mapping of settings")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"VRDE: unknown field '{unknown[0]}'")
        config = cls(**data)
        config.validate()
        return config

