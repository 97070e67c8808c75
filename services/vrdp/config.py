"""vrde.json: what the manager tells a VM's RDP server (docs/control-api.md), read and written only here.

VrdeConfig holds exactly the contract's fields with VirtualBox's defaults; load() validates, save() is atomic and 0600."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

from services.private_file import write_private

AUTH_TYPES = ("null", "external", "guest")
DEFAULT_AUTH_LIBRARY = "VBoxAuth"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# The Client/Disable* switches VirtualBox reads once per client (research/vrde.md §4.5).
CLIENT_FEATURES = ("Client/DisableDisplay", "Client/DisableInput", "Client/DisableAudio",
                   "Client/DisableUSB", "Client/DisableClipboard", "Client/DisableRDPDR")


class ConfigError(ValueError):
    """vrde.json is unreadable or holds a bad value; the message is one line for the user."""


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

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        for name, kind in (("vm_name", str), ("vm_uuid", str), ("ports", str), ("address", str),
                           ("auth_type", str), ("auth_library", str), ("state_dir", str)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"vrde.json: '{name}' must be a string")
        for name in ("enabled", "multicon", "reusecon", "video_channel"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"vrde.json: '{name}' must be true or false")
        for name in ("auth_timeout_ms", "video_channel_quality"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"vrde.json: '{name}' must be an integer")
        if self.auth_type not in AUTH_TYPES:
            raise ConfigError(f"vrde.json: auth_type '{self.auth_type}' is not one of {', '.join(AUTH_TYPES)}")
        if not self.auth_library:
            raise ConfigError("vrde.json: auth_library is empty")
        if not 0 <= self.auth_timeout_ms <= 600_000:
            raise ConfigError(f"vrde.json: auth_timeout_ms {self.auth_timeout_ms} is not within 0..600000")
        if not 10 <= self.video_channel_quality <= 100:
            raise ConfigError(f"vrde.json: video_channel_quality {self.video_channel_quality} is not within 10..100")
        if not self.ports.strip():
            raise ConfigError("vrde.json: ports is empty")
        for name in ("properties", "features", "users"):
            mapping = getattr(self, name)
            if not isinstance(mapping, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
                raise ConfigError(f"vrde.json: '{name}' must map strings to strings")
        for user, digest in self.users.items():
            if not SHA256_HEX.fullmatch(digest):
                raise ConfigError(f"vrde.json: the password of user '{user}' is not a lowercase hex SHA-256")

    def feature(self, name: str) -> bool:
        """A Client/Disable* switch is on only for the exact value "1" (a VRDE property wins over extradata)."""
        value = self.properties.get(name)
        if value is None:
            value = self.features.get(name)
        return value == "1"

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
            raise ConfigError("vrde.json: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"vrde.json: unknown field '{unknown[0]}'")
        config = cls(**data)
        config.validate()
        return config

    @classmethod
    def load(cls, path: str) -> VrdeConfig:
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
        except OSError as exc:
            raise ConfigError(f"cannot read '{path}': {exc.strerror}") from None
        except (ValueError, UnicodeError) as exc:
            raise ConfigError(f"'{path}' is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str) -> None:
        """Write atomically (a reader never sees half a file), readable by the owner only."""
        self.validate()
        write_private(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))


class ConfigWatcher:
    """Re-reads a vrde.json whose mtime (or size) changed; a bad new file is reported and the old one kept."""

    def __init__(self, path: str):
        self.path = path
        self._stamp = self._stat()
        self.config = VrdeConfig.load(path)

    def _stat(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> VrdeConfig | None:
        """The new configuration when the file changed and is valid; None otherwise.
        Raises ConfigError (once per change) when the changed file is bad."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        config = VrdeConfig.load(self.path)
        self.config = config
        return config
