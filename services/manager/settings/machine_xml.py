"""A Machine to the XML of a VirtualBox .vbox settings file and back (element and attribute names
as VirtualBox writes them, so the files read like VirtualBox's; `Accel` is ours)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..errors import FILE_ERROR, ManagerError
from .model import (
    ACCELS,
    NIC_SLOTS,
    Attachment,
    Controller,
    Machine,
    Nic,
    Teleporter,
    Vrde,
)
from .network_xml import adapter_element, read_adapter
from .xmlutil import (
    bool_attr,
    braced,
    envelope,
    extradata_element,
    int_attr,
    parse,
    read_extradata,
    serialize,
    unbraced,
    yes,
)

_BOOT = {"none": "None", "floppy": "Floppy", "dvd": "DVD", "disk": "HardDisk", "net": "Network"}
_BOOT_BACK = {v.lower(): k for k, v in _BOOT.items()}
_AUTH = {"null": "Null", "external": "External", "guest": "Guest"}
_DEVICE = {"hdd": "HardDisk", "dvd": "DVD"}
_DEVICE_BACK = {v: k for k, v in _DEVICE.items()}
_BUS_OF = {"PIIX3": "IDE", "PIIX4": "IDE", "ICH6": "IDE", "IntelAhci": "SATA"}


def to_xml(m: Machine) -> bytes:
    root = envelope()
    el = ET.SubElement(root, "Machine", uuid=braced(m.uuid), name=m.name, OSType=m.ostype,
                       snapshotFolder="Snapshots")
    if m.last_state_change:
        el.set("lastStateChange", m.last_state_change)
    extradata_element(el, m.extradata)
    t = m.teleporter
    if t.enabled or t.port or t.address or t.password:
        ET.SubElement(el, "Teleporter", enabled=yes(t.enabled), port=str(t.port),
                      address=t.address, password=t.password)
    hw = ET.SubElement(el, "Hardware")
    cpu = ET.SubElement(hw, "CPU", count=str(m.cpus))
    if m.cpuid:
        tree = ET.SubElement(cpu, "CpuIdTree")
        for leaf in sorted(m.cpuid):
            regs = m.cpuid[leaf]
            ET.SubElement(tree, "CpuIdLeaf", id=f"0x{leaf:x}", subleaf="0",
                          **{r: f"0x{v:x}" for r, v in zip(("eax", "ebx", "ecx", "edx"), regs)})
    ET.SubElement(hw, "Memory", RAMSize=str(m.memory_mb))
    ET.SubElement(hw, "Accel", type=m.accel)
    boot = ET.SubElement(hw, "Boot")
    for position, device in enumerate(m.boot, 1):
        ET.SubElement(boot, "Order", position=str(position), device=_BOOT[device])
    ET.SubElement(hw, "Display", VRAMSize=str(m.vram_mb))
    _vrde_to_xml(hw, m.vrde)
    bios = ET.SubElement(hw, "BIOS")
    ET.SubElement(bios, "ACPI", enabled=yes(m.acpi))
    ET.SubElement(bios, "IOAPIC", enabled=yes(m.ioapic))
    usb = ET.SubElement(hw, "USB")
    if m.usb:
        ET.SubElement(ET.SubElement(usb, "Controllers"), "Controller", name="OHCI", type="OHCI")
    net = ET.SubElement(hw, "Network")
    for slot, nic in enumerate(m.nics):
        adapter_element(net, slot, nic)
    uart = ET.SubElement(hw, "UART")
    if m.uart1 or m.uartmode1:
        io, irq = m.uart1 or (0x3F8, 4)
        port = ET.SubElement(uart, "Port", slot="0", enabled=yes(m.uart1 is not None),
                             IOBase=f"0x{io:x}", IRQ=str(irq), hostMode="Disconnected")
        if m.uartmode1:
            port.set("hostMode", "RawFile")
            port.set("path", m.uartmode1[1])
    ET.SubElement(hw, "RTC", localOrUTC="UTC" if m.rtc_utc else "local")
    controllers = ET.SubElement(el, "StorageControllers")
    for c in m.controllers:
        node = ET.SubElement(controllers, "StorageController", name=c.name, type=c.type,
                             PortCount=str(c.port_count), useHostIOCache=yes(c.bus == "IDE"),
                             Bootable="true")
        for a in sorted(c.attachments, key=lambda a: (a.port, a.device)):
            dev = ET.SubElement(node, "AttachedDevice", type=_DEVICE[a.type], port=str(a.port),
                                device=str(a.device))
            if a.type == "dvd":
                dev.set("passthrough", "false")
            if a.medium:
                ET.SubElement(dev, "Image", uuid=braced(a.medium))
    return serialize(root)


def _vrde_to_xml(hw: ET.Element, v: Vrde) -> None:
    el = ET.SubElement(hw, "RemoteDisplay", enabled=yes(v.enabled), authType=_AUTH[v.auth_type],
                       authTimeout=str(v.auth_timeout_ms), allowMultiConnection=yes(v.multicon),
                       reuseSingleConnection=yes(v.reusecon))
    if v.auth_library:
        el.set("authLibrary", v.auth_library)
    if v.properties:
        props = ET.SubElement(el, "VRDEProperties")
        for name in sorted(v.properties):
            ET.SubElement(props, "Property", name=name, value=v.properties[name])


def from_xml(data: bytes, path: str) -> Machine:
    """The Machine in a .vbox file; a file we cannot understand is a one-line FILE_ERROR."""
    el = parse(data, path, "Machine")
    uuid, name = unbraced(el.get("uuid")), el.get("name", "")
    if not uuid or not name:
        raise ManagerError(FILE_ERROR, f"Settings file '{path}' has a <Machine> without uuid or name")
    m = Machine(uuid=uuid, name=name, ostype=el.get("OSType", "Other"),
                last_state_change=el.get("lastStateChange", ""))
    m.extradata = read_extradata(el)
    t = el.find("Teleporter")
    if t is not None:
        m.teleporter = Teleporter(bool_attr(t, "enabled", False), int_attr(t, "port", 0),
                                  t.get("address", ""), t.get("password", ""))
    hw = el.find("Hardware")
    if hw is None:
        return m
    cpu = hw.find("CPU")
    m.cpus = int_attr(cpu, "count", 1)
    for leaf in hw.findall("CPU/CpuIdTree/CpuIdLeaf"):
        m.cpuid[int_attr(leaf, "id", 0)] = [int_attr(leaf, r, 0) for r in ("eax", "ebx", "ecx", "edx")]
    m.memory_mb = int_attr(hw.find("Memory"), "RAMSize", m.memory_mb)
    accel = hw.find("Accel")
    if accel is not None and accel.get("type") in ACCELS:
        m.accel = accel.get("type")
    orders = sorted(hw.findall("Boot/Order"), key=lambda o: int_attr(o, "position", 0))
    if orders:
        boot = [_BOOT_BACK.get(o.get("device", "None").lower(), "none") for o in orders][:4]
        m.boot = boot + ["none"] * (4 - len(boot))
    m.vram_mb = int_attr(hw.find("Display"), "VRAMSize", m.vram_mb)
    m.vrde = _vrde_from_xml(hw.find("RemoteDisplay"))
    m.acpi = bool_attr(hw.find("BIOS/ACPI"), "enabled", True)
    m.ioapic = bool_attr(hw.find("BIOS/IOAPIC"), "enabled", False)
    m.usb = hw.find("USB/Controllers/Controller") is not None
    m.nics = [Nic() for _ in range(NIC_SLOTS)]
    for adapter in hw.findall("Network/Adapter"):
        slot = int_attr(adapter, "slot", -1)
        if 0 <= slot < NIC_SLOTS:
            m.nics[slot] = read_adapter(adapter)
    for port in hw.findall("UART/Port"):
        if int_attr(port, "slot", -1) != 0:
            continue
        if bool_attr(port, "enabled", False):
            m.uart1 = (int_attr(port, "IOBase", 0x3F8), int_attr(port, "IRQ", 4))
        if port.get("hostMode") == "RawFile" and port.get("path"):
            m.uartmode1 = ("file", port.get("path"))
    m.rtc_utc = (hw.find("RTC") is not None and hw.find("RTC").get("localOrUTC") == "UTC")
    for node in el.findall("StorageControllers/StorageController"):
        ctype = node.get("type", "PIIX4")
        c = Controller(node.get("name", ""), _BUS_OF.get(ctype, "SATA"), ctype,
                       int_attr(node, "PortCount", 2))
        for dev in node.findall("AttachedDevice"):
            image = dev.find("Image")
            c.attachments.append(Attachment(int_attr(dev, "port", 0), int_attr(dev, "device", 0),
                                            _DEVICE_BACK.get(dev.get("type", ""), "hdd"),
                                            unbraced(image.get("uuid")) if image is not None else None))
        m.controllers.append(c)
    return m


def _vrde_from_xml(el: ET.Element | None) -> Vrde:
    if el is None:
        return Vrde()
    auth = {v.lower(): k for k, v in _AUTH.items()}.get(el.get("authType", "Null").lower(), "null")
    props = {p.get("name", ""): p.get("value", "") for p in el.findall("VRDEProperties/Property")
             if p.get("name")}
    return Vrde(bool_attr(el, "enabled", False), auth, el.get("authLibrary", ""),
                int_attr(el, "authTimeout", 5000), bool_attr(el, "allowMultiConnection", False),
                bool_attr(el, "reuseSingleConnection", False), props)
