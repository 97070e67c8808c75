"""The settings as plain data: one Machine per .vbox file and one Registry for Headbox.xml.
No I/O here; machine_xml and registry_xml turn these into VirtualBox-shaped XML and back."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.ipc.network import PortForward

BOOT_DEVICES = ("none", "floppy", "dvd", "disk", "net")
NIC_MODES = ("none", "null", "nat", "bridged", "intnet", "hostonly", "natnetwork", "generic")
NIC_SLOTS = 8
# VBoxManage's --nictype names, which the .vbox file stores too; the Main API prefixes the Intel
# cards with "I" (NetworkAdapterType_I82540EM), as ostypes.py and showvminfo's "adapter" do.
NIC_TYPES = ("Am79C970A", "Am79C973", "Am79C960", "82540EM", "82543GC", "82545EM", "virtio")
NIC_API_NAMES = {"82540EM": "I82540EM", "82543GC": "I82543GC", "82545EM": "I82545EM", "virtio": "Virtio"}
DEFAULT_NIC_TYPE = "Am79C973"      # VirtualBox's, when a .vbox <Adapter> names none
ACCELS = ("kvm", "tcg", "auto")
AUTH_TYPES = ("null", "external", "guest")
DEFAULT_VRDE_PORT = "3389"


@dataclass
class Attachment:
    port: int
    device: int
    type: str                       # "hdd" or "dvd"
    medium: str | None = None       # the medium's UUID; None is an empty DVD drive


@dataclass
class Controller:
    name: str
    bus: str                        # "IDE" or "SATA"
    type: str                       # "PIIX3", "PIIX4" or "IntelAhci"
    port_count: int
    attachments: list[Attachment] = field(default_factory=list)

    def attachment_at(self, port: int, device: int) -> Attachment | None:
        return next((a for a in self.attachments if (a.port, a.device) == (port, device)), None)


def nic_type_name(name: str) -> str:
    """A card's VBoxManage name from either spelling, any case ("i82540em" is "82540EM"); a name
    VirtualBox knows and we do not (7.0's NE2000, ...) stays as it is."""
    for vboxmanage in NIC_TYPES:
        if name.lower() in (vboxmanage.lower(), NIC_API_NAMES.get(vboxmanage, vboxmanage).lower()):
            return vboxmanage
    return name


@dataclass
class Nat:
    """An adapter's NAT engine (VirtualBox's INATEngine). It is kept whatever the attachment, as
    VirtualBox keeps it, so `--nic1 bridged` then `--nic1 nat` finds the rules again."""
    network: str = ""               # "" is VirtualBox's default, 10.0.2.0/24
    dns_host_resolver: bool = False
    dns_proxy: bool = False
    tftp_prefix: str = ""
    tftp_file: str = ""
    forwards: list[PortForward] = field(default_factory=list)   # sorted by name, as VirtualBox keeps them
    attributes: dict[str, str] = field(default_factory=dict)   # <NAT>'s others (mtu, localhost-reachable)


@dataclass
class Nic:
    mode: str = "none"              # one of NIC_MODES; "none" is VirtualBox's disabled adapter
    adapter: str = DEFAULT_NIC_TYPE  # one of NIC_TYPES
    mac: str = ""                   # 12 upper-case hex digits
    cable: bool = True
    nat: Nat = field(default_factory=Nat)
    # The name each attachment uses (bridged: the host interface, intnet: the network, generic:
    # the driver, ...): VirtualBox keeps them all and shows the current one.
    networks: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.adapter = nic_type_name(self.adapter)


@dataclass
class Vrde:
    enabled: bool = False
    auth_type: str = "null"
    auth_library: str = ""          # "" follows the global vrdeauthlibrary
    auth_timeout_ms: int = 5000
    multicon: bool = False
    reusecon: bool = False
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def ports(self) -> str:
        return self.properties.get("TCP/Ports") or DEFAULT_VRDE_PORT

    @property
    def address(self) -> str:
        return self.properties.get("TCP/Address", "")

    @property
    def video_channel(self) -> bool:
        return self.properties.get("VideoChannel/Enabled", "").lower() in ("true", "1")

    @property
    def video_channel_quality(self) -> int:
        try:
            return int(self.properties.get("VideoChannel/Quality", "75"))
        except ValueError:
            return 75


@dataclass
class Teleporter:
    enabled: bool = False
    port: int = 0
    address: str = ""
    password: str = ""              # "#SHA-512##<hex>" or "" (never the plain text)


@dataclass
class Machine:
    uuid: str
    name: str
    ostype: str = "Other"
    memory_mb: int = 128
    vram_mb: int = 8
    cpus: int = 1
    acpi: bool = True
    ioapic: bool = False
    rtc_utc: bool = False
    boot: list[str] = field(default_factory=lambda: ["floppy", "dvd", "disk", "none"])
    nics: list[Nic] = field(default_factory=lambda: [Nic("nat")] + [Nic() for _ in range(NIC_SLOTS - 1)])
    usb: bool = False
    uart1: tuple[int, int] | None = None             # (io base, irq) when enabled
    uartmode1: tuple[str, str] | None = None         # None = disconnected; ("file", path)
    accel: str = "auto"
    cpuid: dict[int, list[int]] = field(default_factory=dict)   # leaf -> [eax, ebx, ecx, edx]
    vrde: Vrde = field(default_factory=Vrde)
    teleporter: Teleporter = field(default_factory=Teleporter)
    controllers: list[Controller] = field(default_factory=list)
    extradata: dict[str, str] = field(default_factory=dict)
    last_state_change: str = ""

    def controller(self, name: str) -> Controller | None:
        return next((c for c in self.controllers if c.name == name), None)

    def attached_media(self) -> list[str]:
        return [a.medium for c in self.controllers for a in c.attachments if a.medium]


@dataclass
class MachineEntry:
    uuid: str
    src: str                        # the .vbox file's absolute path


@dataclass
class Medium:
    uuid: str
    location: str                   # absolute path
    kind: str                       # "hdd" or "dvd"
    format: str                     # "VDI", "RAW" or "ISO"
    type: str = "Normal"


@dataclass
class Registry:
    machines: list[MachineEntry] = field(default_factory=list)
    media: list[Medium] = field(default_factory=list)
    extradata: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)   # SystemProperties attributes

    def machine_entry(self, uuid: str) -> MachineEntry | None:
        return next((m for m in self.machines if m.uuid == uuid), None)

    def medium(self, uuid: str) -> Medium | None:
        return next((m for m in self.media if m.uuid == uuid), None)

    def medium_at(self, location: str) -> Medium | None:
        return next((m for m in self.media if m.location == location), None)
