"""What a VM's processes are told, derived from its settings: its launch spec (services/ipc/spec.py),
the RDP server's VRDE settings included; settings we cannot run are refused."""

from __future__ import annotations

import os
import re

from services.ipc.network import ATTACHMENTS, CHIPS, NetAdapter, NetworkError
from services.ipc.spec import Drive, LaunchSpec
from services.ipc.vrde import VrdeConfig

from ..errors import E_INVALIDARG, FILE_ERROR, OBJECT_NOT_FOUND, ManagerError
from .model import Machine, Registry

COM1 = (0x3F8, 4)
_FEATURE_PREFIXES = ("VRDE/Feature/", "VRDP/Feature/")
USERS_PREFIX = "VBoxAuthSimple/users/"
DEFAULT_AUTH_LIBRARY = "VBoxAuth"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _drives(m: Machine, reg: Registry) -> tuple[list[Drive], str]:
    ide = [c for c in m.controllers if c.bus == "IDE"]
    for c in m.controllers:
        if c.bus != "IDE" and c.attachments:
            raise ManagerError(E_INVALIDARG, f"SATA controllers are not emulated; attach the disk "
                                             f"to an IDE controller (controller '{c.name}')")
    used = [c for c in ide if c.attachments]
    if len(used) > 1:
        raise ManagerError(E_INVALIDARG, "Only one IDE controller is emulated; attach every drive "
                                         f"to '{used[0].name}'")
    controller = (used or ide or [None])[0]
    if controller is None:
        return [], "piix3"
    drives = []
    for a in sorted(controller.attachments, key=lambda a: (a.port, a.device)):
        if a.medium is None:
            drives.append(Drive(a.port, a.device, a.type, None))
            continue
        medium = reg.medium(a.medium)
        if medium is None:
            raise ManagerError(OBJECT_NOT_FOUND, f"Could not find a registered medium with UUID "
                                                 f"{{{a.medium}}} (port {a.port}, device "
                                                 f"{a.device} of '{controller.name}')")
        if not os.path.exists(medium.location):
            raise ManagerError(FILE_ERROR, f"Could not find file for the medium "
                                           f"'{medium.location}' (VERR_FILE_NOT_FOUND)")
        drives.append(Drive(a.port, a.device, a.type, medium.location))
    return drives, "piix4" if controller.type == "PIIX4" else "piix3"


def _serial_log(m: Machine) -> str | None:
    if m.uart1 is None:
        return None
    if tuple(m.uart1) != COM1:
        io, irq = m.uart1
        raise ManagerError(E_INVALIDARG, f"UART 1 at I/O base 0x{io:X}, IRQ {irq} is not emulated: "
                                         "only COM1 (--uart1 0x3F8 4) exists")
    return m.uartmode1[1] if m.uartmode1 else None


# What each attachment is called in VirtualBox's own error messages and showvminfo.
ATTACHMENT_NAMES = {"null": "not attached", "bridged": "Bridged Interface", "intnet": "Internal Network",
                    "hostonly": "Host-only Interface", "natnetwork": "NAT Network", "generic": "Generic Driver"}


def _nics(m: Machine) -> list[NetAdapter]:
    """One network card per enabled adapter (slot N-1 for --nic<N>), or why the VM cannot run it."""
    adapters = []
    for slot, nic in enumerate(m.nics):
        n = slot + 1
        if nic.mode == "none":
            continue
        if nic.mode not in ATTACHMENTS:
            shown = [f"{a} ({ATTACHMENT_NAMES[a]})" if a == "null" else a for a in ATTACHMENTS]
            raise ManagerError(E_INVALIDARG, f"NIC {n}: the attachment {nic.mode} "
                                             f"({ATTACHMENT_NAMES.get(nic.mode, nic.mode)}) is not available: "
                                             f"only {' and '.join(shown)} are; use --nic{n} "
                                             f"{', '.join(ATTACHMENTS)} or none")
        if nic.adapter not in CHIPS:
            raise ManagerError(E_INVALIDARG, f"NIC {n}: the adapter type {nic.adapter} is not emulated "
                                             f"(available: {', '.join(CHIPS)}); use --nictype{n} "
                                             f"{CHIPS[0]}")
        if not nic.mac:
            raise ManagerError(E_INVALIDARG, f"NIC {n} has no MAC address: set one with --macaddress{n} auto")
        adapter = NetAdapter(slot=slot, chip=nic.adapter, mac=nic.mac, attachment=nic.mode, cable=nic.cable,
                             nat_network=nic.nat.network or NetAdapter.nat_network,
                             dns_host_resolver=nic.nat.dns_host_resolver, tftp_prefix=nic.nat.tftp_prefix,
                             tftp_file=nic.nat.tftp_file, forwards=tuple(nic.nat.forwards))
        try:
            adapters.append(adapter.validate())
        except NetworkError as error:      # a hand-edited settings file: modifyvm checks every value
            raise ManagerError(E_INVALIDARG, f"NIC {n}: {error}") from None
    return adapters


BIOS_ROM_KEY = "VBoxInternal/Devices/pcbios/0/Config/BiosRom"


def launch_spec(m: Machine, reg: Registry, folder: str) -> LaunchSpec:
    """The launch spec that runs this VM."""
    boot = tuple(dict.fromkeys(d for d in m.boot if d in ("dvd", "disk")))   # once each, in order
    if not boot:
        raise ManagerError(E_INVALIDARG, "No boot device the VM can boot from: set --boot1 dvd "
                                         "or --boot1 disk")
    drives, ide_controller = _drives(m, reg)
    spec = LaunchSpec(vm_id=m.uuid, memory_mib=m.memory_mb, cpus=m.cpus, accel=m.accel, boot=boot,
                      drives=drives, ide_controller=ide_controller, acpi=m.acpi, serial_log=_serial_log(m),
                      cpuid=[[leaf, *regs] for leaf, regs in sorted(m.cpuid.items())],
                      vrde=VrdeConfig.from_dict(vrde_config(m, reg, folder)), nics=_nics(m))
    rom = m.extradata.get(BIOS_ROM_KEY)
    if rom:
        # VirtualBox's custom BIOS image (the tests run flat test programs this way).
        if not os.path.isfile(rom):
            raise ManagerError(FILE_ERROR, f"The BIOS ROM image '{rom}' ({BIOS_ROM_KEY}) does not exist")
        spec.firmware = rom
    return spec


def _users(m: Machine, reg: Registry) -> dict[str, str]:
    users = {k[len(USERS_PREFIX):]: v for k, v in reg.extradata.items() if k.startswith(USERS_PREFIX)}
    users.update({k[len(USERS_PREFIX):]: v for k, v in m.extradata.items() if k.startswith(USERS_PREFIX)})
    # Only a SHA-256 can match (setextradata stores nothing else); a hand-edited value is no user.
    return {name: digest for name, digest in users.items() if name and _SHA256.fullmatch(digest)}


def vrde_config(m: Machine, reg: Registry, folder: str) -> dict:
    """The VRDE settings of docs/control-api.md (services/ipc/vrde.py VrdeConfig's fields)."""
    v = m.vrde
    features = {}
    for prefix in reversed(_FEATURE_PREFIXES):    # VRDE/Feature/* wins over the legacy VRDP/
        for key, value in m.extradata.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                features[key[len(prefix):]] = value
    library = v.auth_library or reg.properties.get("VRDEAuthLibrary") or DEFAULT_AUTH_LIBRARY
    return {"vm_name": m.name, "vm_uuid": m.uuid, "enabled": v.enabled, "ports": v.ports,
            "address": v.address, "auth_type": v.auth_type, "auth_library": library,
            "auth_timeout_ms": min(max(v.auth_timeout_ms, 0), 600_000), "multicon": v.multicon,
            "reusecon": v.reusecon, "video_channel": v.video_channel,
            "video_channel_quality": min(max(v.video_channel_quality, 10), 100),
            "properties": dict(v.properties), "features": features, "users": _users(m, reg),
            "state_dir": folder}
