"""The global Registry to the XML of Headbox.xml and back, shaped like VirtualBox.xml: machine
and media registries, global extradata and the system properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .model import MachineEntry, Medium, Registry
from .xmlutil import (
    braced,
    envelope,
    extradata_element,
    parse,
    read_extradata,
    serialize,
    unbraced,
)

_MEDIA_LISTS = (("hdd", "HardDisks", "HardDisk"), ("dvd", "DVDImages", "Image"))


def to_xml(reg: Registry) -> bytes:
    root = envelope()
    glob = ET.SubElement(root, "Global")
    extradata_element(glob, reg.extradata)
    machines = ET.SubElement(glob, "MachineRegistry")
    for entry in reg.machines:
        ET.SubElement(machines, "MachineEntry", uuid=braced(entry.uuid), src=entry.src)
    media = ET.SubElement(glob, "MediaRegistry")
    for kind, list_tag, item_tag in _MEDIA_LISTS:
        node = ET.SubElement(media, list_tag)
        for m in reg.media:
            if m.kind == kind:
                ET.SubElement(node, item_tag, uuid=braced(m.uuid), location=m.location,
                              format=m.format, type=m.type)
    props = ET.SubElement(glob, "SystemProperties")
    for name in sorted(reg.properties):
        props.set(name, reg.properties[name])
    return serialize(root)


def from_xml(data: bytes, path: str) -> Registry:
    glob = parse(data, path, "Global")
    reg = Registry(extradata=read_extradata(glob))
    for entry in glob.findall("MachineRegistry/MachineEntry"):
        if entry.get("uuid") and entry.get("src"):
            reg.machines.append(MachineEntry(unbraced(entry.get("uuid")), entry.get("src")))
    for kind, list_tag, item_tag in _MEDIA_LISTS:
        for item in glob.findall(f"MediaRegistry/{list_tag}/{item_tag}"):
            if item.get("uuid") and item.get("location"):
                reg.media.append(Medium(unbraced(item.get("uuid")), item.get("location"), kind,
                                        item.get("format", "VDI" if kind == "hdd" else "ISO"),
                                        item.get("type", "Normal")))
    props = glob.find("SystemProperties")
    if props is not None:
        reg.properties = dict(props.attrib)
    return reg
