"""A VM's network adapters as its processes receive them in the launch spec: the card, its MAC
address, cable and attachment, and the NAT's settings and port-forwarding rules (VirtualBox's
`--natpf<N>` syntax parsed and printed here, once)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

ADAPTER_SLOTS = 8
# The cards built (VirtualBox's --nictype names): Intel PRO/1000 family, AMD PCnet, virtio-net.
CHIPS = ("82540EM", "82543GC", "82545EM", "Am79C973", "Am79C970A", "virtio")
ATTACHMENTS = ("nat", "null")      # "null": a card with no cable behind it
PROTOCOLS = ("tcp", "udp")


class NetworkError(ValueError):
    """A network setting that cannot work; one line for the user."""


@dataclass(frozen=True)
class PortForward:
    """One `--natpf<N>` rule: name,tcp|udp,[hostip],hostport,[guestip],guestport."""
    name: str
    protocol: str
    host_ip: str
    host_port: int
    guest_ip: str
    guest_port: int

    @classmethod
    def parse(cls, text: str) -> "PortForward":
        parts = text.split(",")
        if len(parts) != 6:
            raise NetworkError(f"bad port-forwarding rule '{text}' "
                               "(expected name,tcp|udp,[hostip],hostport,[guestip],guestport)")
        name, protocol, host_ip, host_port, guest_ip, guest_port = (p.strip() for p in parts)
        return cls.from_values(name, protocol.lower(), host_ip, host_port, guest_ip, guest_port)

    @classmethod
    def from_values(cls, name, protocol, host_ip, host_port, guest_ip, guest_port) -> "PortForward":
        if not name or not re.fullmatch(r"[^,\s][^,]*", name):
            raise NetworkError("a port-forwarding rule needs a name without commas")
        if protocol not in PROTOCOLS:
            raise NetworkError(f"port-forwarding protocol '{protocol}': expected tcp or udp")
        for address in (host_ip, guest_ip):
            if address:
                try:
                    ipaddress.IPv4Address(address)
                except ValueError:
                    raise NetworkError(f"'{address}' is not an IPv4 address") from None
        ports = []
        for port in (host_port, guest_port):
            try:
                number = int(port)
            except (TypeError, ValueError):
                number = -1
            if not 1 <= number <= 65535:
                raise NetworkError(f"port '{port}' is not a number from 1 to 65535")
            ports.append(number)
        return cls(name, protocol, host_ip, ports[0], guest_ip, ports[1])

    def text(self) -> str:
        return f"{self.name},{self.protocol},{self.host_ip},{self.host_port},{self.guest_ip},{self.guest_port}"


def parse_mac(text: str) -> bytes:
    """VirtualBox's 12 hex digits (separators allowed); a unicast address."""
    digits = re.sub(r"[:\-.]", "", text or "")
    if not re.fullmatch(r"[0-9A-Fa-f]{12}", digits):
        raise NetworkError(f"'{text}' is not a MAC address (12 hexadecimal digits)")
    mac = bytes.fromhex(digits)
    if mac[0] & 1:
        raise NetworkError(f"MAC address {text} is a multicast address")
    return mac


def nat_addresses(network: str) -> dict[str, str]:
    """VirtualBox's addresses in a NAT network ("10.0.2.0/24"): host .2, DNS .3, guest .15."""
    try:
        net = ipaddress.IPv4Network(network or "10.0.2.0/24", strict=False)
    except ValueError:
        raise NetworkError(f"'{network}' is not a network (expected e.g. 10.0.2.0/24)") from None
    if net.prefixlen > 28:
        raise NetworkError(f"NAT network {network} is too small (at most /28)")
    base = int(net.network_address)
    return {"network": str(net.network_address), "prefix": str(net.prefixlen),
            "host": str(ipaddress.IPv4Address(base + 2)), "nameserver": str(ipaddress.IPv4Address(base + 3)),
            "guest": str(ipaddress.IPv4Address(base + 15))}


@dataclass(frozen=True)
class NetAdapter:
    slot: int                          # 0-7: VirtualBox's --nic<slot + 1>
    chip: str                          # one of CHIPS
    mac: str                           # 12 hex digits
    attachment: str = "nat"            # one of ATTACHMENTS
    cable: bool = True
    nat_network: str = "10.0.2.0/24"
    dns_host_resolver: bool = False
    tftp_prefix: str = ""              # --nattftpprefix: the TFTP server's folder
    tftp_file: str = ""                # --nattftpfile: the boot file DHCP offers
    forwards: tuple = field(default_factory=tuple)   # PortForward values

    def __post_init__(self) -> None:
        object.__setattr__(self, "forwards", tuple(
            f if isinstance(f, PortForward) else PortForward(**f) if isinstance(f, dict) else PortForward(*f)
            for f in self.forwards))

    def validate(self) -> "NetAdapter":
        if not 0 <= self.slot < ADAPTER_SLOTS:
            raise NetworkError(f"network adapter {self.slot + 1}: adapters are 1 to {ADAPTER_SLOTS}")
        if self.chip not in CHIPS:
            raise NetworkError(f"network adapter {self.slot + 1}: card type '{self.chip}' is not built "
                               f"(available: {', '.join(CHIPS)})")
        if self.attachment not in ATTACHMENTS:
            raise NetworkError(f"network adapter {self.slot + 1}: attachment '{self.attachment}' is not "
                               f"built (available: {', '.join(ATTACHMENTS)})")
        parse_mac(self.mac)
        nat_addresses(self.nat_network)
        for rule in self.forwards:
            PortForward.from_values(rule.name, rule.protocol, rule.host_ip, rule.host_port,
                                    rule.guest_ip, rule.guest_port)
        return self
