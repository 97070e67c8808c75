"""VBoxManage's output made from the control API's answers (docs/control-api.md), without I/O.

Layouts follow VirtualBox 6.1's VBoxManageInfo.cpp/VBoxManageList.cpp: `%-28s ` labels, key="value"."""

from __future__ import annotations

BOOT_NAMES = {"none": "Not Assigned", "floppy": "Floppy", "dvd": "DVD", "disk": "HardDisk", "net": "Network"}
NIC_NAMES = {"null": "none", "nat": "NAT", "bridged": "Bridged Interface", "intnet": "Internal Network",
             "hostonly": "Host-only Interface", "natnetwork": "NAT Network", "generic": "Generic"}
# --machinereadable's nic<N> value per attachment, and the key naming its network (VirtualBox 7.0's
# VBoxManageInfo.cpp, "Generic" capitalized as there).
NIC_MACHINE = {"null": ("null", None), "nat": ("nat", None), "bridged": ("bridged", "bridgeadapter"),
               "intnet": ("intnet", "intnet"), "hostonly": ("hostonly", "hostonlyadapter"),
               "natnetwork": ("natnetwork", "nat-network"), "generic": ("Generic", "generic")}
NAT_SOCKET_DEFAULT = 64        # what VirtualBox reports for a NAT's unset socket and TCP window sizes
STATE_NAMES = {"PoweredOff": ("powered off", "poweroff"), "Saved": ("saved", "saved"),
               "Aborted": ("aborted", "aborted"), "Running": ("running", "running"),
               "Paused": ("paused", "paused"), "Starting": ("starting", "starting"),
               "Stopping": ("stopping", "stopping"), "Teleporting": ("teleporting", "teleporting"),
               "TeleportingIn": ("teleporting in", "teleportingin"), "Teleported": ("teleported", "teleported")}
CONTROLLER_PORTS = {"PIIX3": 2, "PIIX4": 2, "ICH6": 2, "IntelAhci": 30}
RUNNING_STATES = ("Running", "Paused", "Teleporting", "Stopping")
VRDE_PROPERTIES = ("TCP/Ports", "TCP/Address", "VideoChannel/Enabled", "VideoChannel/Quality",
                   "VideoChannel/DownscaleProtection", "Client/DisableDisplay", "Client/DisableInput",
                   "Client/DisableAudio", "Client/DisableUSB", "Client/DisableClipboard",
                   "Client/DisableUpstreamAudio", "Client/DisableRDPDR", "H3DRedirect/Enabled",
                   "Security/Method", "Security/ServerCertificate", "Security/ServerPrivateKey",
                   "Security/CACertificate", "Audio/RateCorrectionMode", "Audio/LogPath")


def _line(label: str, value) -> str:
    return f"{label + ':':<28} {value}\n"


def _on_off(value) -> str:
    return "on" if value else "off"


def _enabled(value) -> str:
    return "enabled" if value else "disabled"


def _quote(value) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------------------------------------

def createvm(result: dict, registered: bool) -> str:
    done = "is created and registered" if registered else "is created"
    return (f"Virtual machine '{result['name']}' {done}.\n"
            f"UUID: {result['uuid']}\n"
            f"Settings file: '{result['settings_file']}'\n")


def medium_created(result: dict) -> str:
    return f"Medium created. UUID: {result['uuid']}\n"


def extradata(result, enumerate_all: bool) -> str:
    if enumerate_all:
        return "".join(f"Key: {item['key']}, Value: {item['value']}\n" for item in result or [])
    return "No value set!\n" if result is None else f"Value: {result}\n"


# ------------------------------------------------------------------------------------------------
# list

def list_output(what: str, items, long: bool = False) -> str:
    if what in ("vms", "runningvms"):
        return "".join(f'"{vm["name"]}" {{{vm["uuid"]}}}\n' for vm in items)
    if what == "ostypes":
        return "".join(_ostype(ostype) for ostype in items)
    if what in ("hdds", "dvds"):
        return "\n".join(_medium(medium, what) for medium in items)
    if what == "systemproperties":
        return _system_properties(items)
    raise ValueError(f"nothing to list as {what!r}")


def _ostype(ostype: dict) -> str:
    family = ostype.get("family", "")
    return (f"ID:          {ostype['id']}\n"
            f"Description: {ostype.get('description', ostype['id'])}\n"
            f"Family ID:   {family}\n"
            f"Family Desc: {ostype.get('family_description', family)}\n"
            f"64 bit:      {'true' if ostype.get('bits') == 64 else 'false'}\n\n")


def _medium(medium: dict, what: str) -> str:
    lines = f"UUID:           {medium['uuid']}\n"
    if what == "hdds":
        lines += "Parent UUID:    base\n"
    lines += f"State:          {medium.get('state', 'created')}\n"
    if what == "hdds":
        lines += "Type:           normal (base)\n"
    lines += (f"Location:       {medium['path']}\n"
              f"Storage format: {medium.get('format', 'VDI' if what == 'hdds' else 'RAW')}\n"
              f"Capacity:       {medium.get('capacity_mb', 0)} MBytes\n"
              f"Encryption:     disabled\n")
    in_use = medium.get("in_use_by") or []
    if in_use:
        lines += f"In use by VMs:  {', '.join(in_use)}\n"
    return lines


SYSTEM_PROPERTY_LABELS = {"machinefolder": "Default machine folder", "vrdeauthlibrary": "VRDE auth library",
                          "controlendpoint": "Control endpoint"}


def _system_properties(properties) -> str:
    """Items {key, label, value} (or a plain map) print as VirtualBox's `Label:  value` lines."""
    if isinstance(properties, dict):
        items = [{"key": key, "value": value} for key, value in properties.items()]
    else:
        items = properties
    lines = ""
    for item in items:
        name = item.get("key") or item.get("name", "")
        label = item.get("label") or SYSTEM_PROPERTY_LABELS.get(name, name)
        lines += f"{label + ':':<33} {item['value']}\n"
    return lines


# ------------------------------------------------------------------------------------------------
# showvminfo

def showvminfo(info: dict, machine_readable: bool = False) -> str:
    return _machine_readable(info) if machine_readable else _human(info)


def _state(info: dict) -> tuple[str, str]:
    return STATE_NAMES.get(info.get("state", "PoweredOff"), (str(info.get("state")).lower(),) * 2)


def _uart_io(uart) -> tuple[int, int] | None:
    if not uart or uart == "off":
        return None
    io, irq = uart
    return (int(io, 0) if isinstance(io, str) else io), int(irq)


def _ports_total(controller: dict) -> int:
    return controller.get("ports") or CONTROLLER_PORTS.get(controller.get("controller"), 2)


def _human(info: dict) -> str:
    out = _line("Name", info["name"])
    out += _line("Guest OS", info.get("ostype_description") or info.get("ostype") or "Other/Unknown")
    out += _line("UUID", info["uuid"])
    out += _line("Config file", info.get("settings_file", ""))
    out += _line("Memory size", f"{info.get('memory_mb', 0)}MB")
    out += _line("Number of CPUs", info.get("cpus", 1))
    out += _line("CPUID overrides", _cpuid_human(info.get("cpuid")))
    out += _line("Boot menu mode", "message and menu")
    boot = list(info.get("boot") or []) + ["none"] * 4
    for slot in range(4):
        out += _line(f"Boot Device {slot + 1}", BOOT_NAMES.get(boot[slot], boot[slot]))
    out += _line("ACPI", _on_off(info.get("acpi")))
    out += _line("Accelerator", info.get("accel", "auto"))
    human_state, _ = _state(info)
    since = f" (since {info['state_since']})" if info.get("state_since") else ""
    out += _line("State", human_state + since)
    for index, controller in enumerate(info.get("storage") or []):
        ports = _ports_total(controller)
        out += f"{f'Storage Controller Name ({index}):':<39} {controller['name']}\n"
        out += f"{f'Storage Controller Type ({index}):':<39} {controller.get('controller', '')}\n"
        out += f"{f'Storage Controller Instance Number ({index}):':<39} {index}\n"
        out += f"{f'Storage Controller Max Port Count ({index}):':<39} {ports}\n"
        out += f"{f'Storage Controller Port Count ({index}):':<39} {ports}\n"
        out += f"{f'Storage Controller Bootable ({index}):':<39} on\n"
    for controller in info.get("storage") or []:
        for attachment in controller.get("attachments") or []:
            where = f"{controller['name']} ({attachment['port']}, {attachment['device']})"
            if attachment.get("medium_path"):
                medium = f"{attachment['medium_path']} (UUID: {attachment.get('medium_uuid', '')})"
            else:
                medium = "Empty"
            out += f"{where}: {medium}\n"
    for nic in info.get("nics") or []:
        out += _nic_human(nic)
    out += _line("UART 1", _uart_human(info.get("uart1"), info.get("uartmode1")))
    out += _line("USB", _enabled(info.get("usb")))
    out += _vrde_human(info)
    teleporter = info.get("teleporter") or {}
    out += _line("Teleporter Enabled", _enabled(teleporter.get("enabled")))
    out += _line("Teleporter Port", teleporter.get("port", 0))
    out += _line("Teleporter Address", teleporter.get("address", ""))
    out += _line("Teleporter Password", "<set>" if teleporter.get("has_password") else "")
    return out


def _nic_human(nic: dict) -> str:
    """VirtualBox's `NIC <N>:` line, and for NAT its settings and one line per forwarding rule."""
    n, kind = nic["slot"], nic.get("type", "none")
    if kind == "none":
        return _line(f"NIC {n}", "disabled")
    attachment = NIC_NAMES.get(kind, kind)
    if kind not in ("null", "nat"):
        attachment += f" '{nic.get('network', '')}'"
    if kind == "generic":
        attachment += " {  }"          # its properties, which Headbox does not keep
    if "mac" not in nic:               # an older manager's answer: the adapter's details are not in it
        return _line(f"NIC {n}", f"Attachment: {attachment}, Cable connected: {_on_off(nic.get('cable', True))}")
    out = _line(f"NIC {n}", f"MAC: {nic['mac']}, Attachment: {attachment}, "
                            f"Cable connected: {_on_off(nic.get('cable', True))}, Trace: off (file: none), "
                            f"Type: {nic.get('nictype', '')}, Reported speed: 0 Mbps, Boot priority: 0, "
                            "Promisc Policy: deny, Bandwidth group: none")
    if kind == "nat":
        d = NAT_SOCKET_DEFAULT
        out += (f"NIC {n} Settings:  MTU: 0, Socket (send: {d}, receive: {d}), "
                f"TCP Window (send:{d}, receive: {d})\n")
        for index, rule in enumerate(_forwards(nic)):
            name, protocol, host_ip, host_port, guest_ip, guest_port = rule
            out += (f"NIC {n} Rule({index}):   name = {name}, protocol = {protocol}, host ip = {host_ip}, "
                    f"host port = {host_port}, guest ip = {guest_ip}, guest port = {guest_port}\n")
    return out


def _forwards(nic: dict) -> list[list[str]]:
    return [rule.split(",", 5) for rule in (nic.get("nat") or {}).get("forwards") or []
            if rule.count(",") == 5]


def _cpuid_human(cpuid) -> str:
    if not cpuid:
        return "None"
    rows = "Leaf no.  EAX      EBX      ECX      EDX"
    for leaf in sorted(cpuid, key=lambda leaf: int(leaf, 16)):
        registers = " ".join(f"{value:08x}" for value in cpuid[leaf])
        rows += f"\n{'':<28} {int(leaf, 16):08x}  {registers}"
    return rows


def _uart_human(uart, mode) -> str:
    io_irq = _uart_io(uart)
    if io_irq is None:
        return "disabled"
    text = f"I/O base: {io_irq[0]:#06x}, IRQ: {io_irq[1]}, "
    if isinstance(mode, (list, tuple)) and mode and mode[0] == "file":
        return text + f"attached to raw file '{mode[1]}'"
    return text + "disconnected"


def _vrde_on(info: dict) -> bool:
    """VBoxHeadless turns VRDE on for its run whatever the setting (VirtualBox changes the session's
    copy): a running VM with a bound port shows as enabled."""
    bound = info.get("vrde_port_bound") if info.get("state") in RUNNING_STATES else None
    return bool((info.get("vrde") or {}).get("enabled") or bound)


def _vrde_human(info: dict) -> str:
    vrde = info.get("vrde") or {}
    if not _vrde_on(info):
        return _line("VRDE", "disabled")
    out = _line("VRDE", f"enabled (Address {vrde.get('address') or '0.0.0.0'}, Ports {vrde.get('ports', '3389')}, "
                        f"MultiConn: {_on_off(vrde.get('multicon'))}, "
                        f"ReuseSingleConn: {_on_off(vrde.get('reusecon'))}, "
                        f"Authentication type: {vrde.get('auth_type', 'null')})")
    running = info.get("state") in RUNNING_STATES
    bound = info.get("vrde_port_bound")
    if running and bound:
        out += _line("VRDE port", bound)
    if vrde.get("video_channel"):
        out += _line("Video redirection", f"enabled (Quality {vrde.get('video_channel_quality', 75)})")
    else:
        out += _line("Video redirection", "disabled")
    for name, value in _vrde_properties(vrde):
        shown = f'"{value}"' if value not in (None, "") else "<not set>"
        out += f"{'VRDE property':<28}: {name:<10} = {shown}\n"
    if vrde.get("auth_library"):
        out += _line("VRDE auth library", vrde["auth_library"])
    if running:
        clients = info.get("vrde_clients") or []
        out += _line("VRDE Connection", "active" if clients else "not active")
        if clients:
            last = clients[-1]       # the newest logon, as VirtualBox shows its last client
            out += _line("User name", last.get("user") or "")
            out += _line("Client IP", str(last.get("address") or "").rsplit(":", 1)[0])
    return out


def _vrde_properties(vrde: dict) -> list[tuple[str, str]]:
    """TCP/Ports and TCP/Address mirror the ports and address settings, as in VirtualBox."""
    properties = dict(vrde.get("properties") or {})
    properties.setdefault("TCP/Ports", vrde.get("ports", "3389"))
    properties.setdefault("TCP/Address", vrde.get("address", ""))
    names = [name for name in VRDE_PROPERTIES if name in properties]
    names += sorted(name for name in properties if name not in VRDE_PROPERTIES)
    return [(name, properties[name]) for name in names]


def _machine_readable(info: dict) -> str:
    lines = [f"name={_quote(info['name'])}",
             f"ostype={_quote(info.get('ostype_description') or info.get('ostype') or 'Other/Unknown')}",
             f"UUID={_quote(info['uuid'])}",
             f"CfgFile={_quote(info.get('settings_file', ''))}",
             f"memory={info.get('memory_mb', 0)}",
             f"cpus={info.get('cpus', 1)}",
             'bootmenu="messageandmenu"']
    boot = list(info.get("boot") or []) + ["none"] * 4
    lines += [f"boot{slot + 1}={_quote(boot[slot])}" for slot in range(4)]
    lines.append(f"acpi={_quote(_on_off(info.get('acpi')))}")
    lines.append(f"accelerate={_quote(info.get('accel', 'auto'))}")
    for leaf in sorted(info.get("cpuid") or {}, key=lambda leaf: int(leaf, 16)):
        registers = ",".join(f"{value:08x}" for value in info["cpuid"][leaf])
        lines.append(f"cpuid={int(leaf, 16):08x},{registers}")
    _, state = _state(info)
    lines.append(f"VMState={_quote(state)}")
    if info.get("state_since"):
        lines.append(f"VMStateChangeTime={_quote(info['state_since'])}")
    for index, controller in enumerate(info.get("storage") or []):
        ports = _ports_total(controller)
        lines += [f"storagecontrollername{index}={_quote(controller['name'])}",
                  f"storagecontrollertype{index}={_quote(controller.get('controller', ''))}",
                  f'storagecontrollerinstance{index}="{index}"',
                  f'storagecontrollermaxportcount{index}="{ports}"',
                  f'storagecontrollerportcount{index}="{ports}"',
                  f'storagecontrollerbootable{index}="on"']
    for controller in info.get("storage") or []:
        for attachment in controller.get("attachments") or []:
            where = f"{controller['name']}-{attachment['port']}-{attachment['device']}"
            lines.append(f"{_quote(where)}={_quote(attachment.get('medium_path') or 'emptydrive')}")
            if attachment.get("medium_uuid"):
                image = f"{controller['name']}-ImageUUID-{attachment['port']}-{attachment['device']}"
                lines.append(f"{_quote(image)}={_quote(attachment['medium_uuid'])}")
    for nic in info.get("nics") or []:
        lines += _nic_machine(nic)
    io_irq = _uart_io(info.get("uart1"))
    lines.append(f'uart1="{io_irq[0]:#06x},{io_irq[1]}"' if io_irq else 'uart1="off"')
    mode = info.get("uartmode1")
    if io_irq:
        lines.append(f"uartmode1={_quote('file,' + mode[1])}" if isinstance(mode, (list, tuple))
                     else 'uartmode1="disconnected"')
    lines.append(f"usb={_quote(_on_off(info.get('usb')))}")
    lines += _vrde_machine(info)
    teleporter = info.get("teleporter") or {}
    lines += [f"teleporterenabled={_quote(_on_off(teleporter.get('enabled')))}",
              f"teleporterport={teleporter.get('port', 0)}",
              f"teleporteraddress={_quote(teleporter.get('address', ''))}"]
    return "".join(line + "\n" for line in lines)


def _nic_machine(nic: dict) -> list[str]:
    """VirtualBox's keys in its order: the attachment's own (natnet<N>, bridgeadapter<N>, ...), then
    macaddress, cableconnected, nic, nictype, nicspeed, then the NAT's (Vagrant reads nic<N> before
    the Forwarding(<i>) lines to know their adapter)."""
    n, kind = nic["slot"], nic.get("type", "none")
    if kind == "none":
        return [f'nic{n}="none"']
    value, network_key = NIC_MACHINE.get(kind, (kind, None))
    lines = []
    if kind == "nat":
        lines.append(f"natnet{n}={_quote((nic.get('nat') or {}).get('network') or 'nat')}")
    elif network_key:
        lines.append(f"{network_key}{n}={_quote(nic.get('network', ''))}")
    lines += [f"macaddress{n}={_quote(nic.get('mac', ''))}",
              f"cableconnected{n}={_quote(_on_off(nic.get('cable', True)))}",
              f"nic{n}={_quote(value)}",
              f"nictype{n}={_quote(nic.get('nictype', ''))}",
              f'nicspeed{n}="0"']
    if kind == "nat":
        d = NAT_SOCKET_DEFAULT
        lines += ['mtu="0"', f'sockSnd="{d}"', f'sockRcv="{d}"', f'tcpWndSnd="{d}"', f'tcpWndRcv="{d}"']
        # As VirtualBox prints them: the rule's text unescaped between quotes.
        lines += [f'Forwarding({index})="{",".join(rule)}"' for index, rule in enumerate(_forwards(nic))]
    return lines


def _vrde_machine(info: dict) -> list[str]:
    vrde = info.get("vrde") or {}
    if not _vrde_on(info):
        return ['vrde="off"']
    bound = info.get("vrde_port_bound") if info.get("state") in RUNNING_STATES else None
    lines = ['vrde="on"',
             f"vrdeport={bound if bound else -1}",
             f"vrdeports={_quote(vrde.get('ports', '3389'))}",
             f"vrdeaddress={_quote(vrde.get('address') or '0.0.0.0')}",
             f"vrdeauthtype={_quote(vrde.get('auth_type', 'null'))}",
             f"vrdemulticon={_quote(_on_off(vrde.get('multicon')))}",
             f"vrdereusecon={_quote(_on_off(vrde.get('reusecon')))}",
             f"vrdevideochannel={_quote(_on_off(vrde.get('video_channel')))}"]
    if vrde.get("video_channel"):
        lines.append(f"vrdevideochannelquality={_quote(vrde.get('video_channel_quality', 75))}")
    if vrde.get("auth_library"):
        lines.append(f"vrdeauthlibrary={_quote(vrde['auth_library'])}")
    for name, value in _vrde_properties(vrde):
        lines.append(f"vrdeproperty[{name}]=" + (_quote(value) if value not in (None, "") else "<not set>"))
    if info.get("state") in RUNNING_STATES:
        lines.append(f"VRDEActiveConnection={_quote(_on_off(info.get('vrde_clients')))}")
    return lines
