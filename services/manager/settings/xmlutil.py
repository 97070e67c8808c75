"""What both settings files share: VirtualBox's XML envelope, attribute conversions, and a
one-line error for a file that is not a settings file we can read."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..errors import FILE_ERROR, ManagerError

NAMESPACE = "http://www.virtualbox.org/"
VERSION = "1.16-linux"


def envelope() -> ET.Element:
    root = ET.Element("VirtualBox")
    root.set("xmlns", NAMESPACE)
    root.set("version", VERSION)
    return root


def serialize(root: ET.Element) -> bytes:
    ET.indent(root, "  ")
    return b'<?xml version="1.0"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def parse(data: bytes, path: str, top: str) -> ET.Element:
    """The `top` element under <VirtualBox>, namespaces dropped."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ManagerError(FILE_ERROR, f"Settings file '{path}' is not valid XML: {exc}") from None
    for el in root.iter():
        el.tag = el.tag.rpartition("}")[2]
    node = root.find(top) if root.tag == "VirtualBox" else None
    if node is None:
        raise ManagerError(FILE_ERROR, f"Settings file '{path}' has no <{top}> element under "
                                       "<VirtualBox>")
    return node


def bool_attr(el: ET.Element | None, name: str, default: bool) -> bool:
    if el is None or name not in el.attrib:
        return default
    return el.get(name, "").lower() in ("true", "1", "yes", "on")


def int_attr(el: ET.Element | None, name: str, default: int) -> int:
    if el is None or name not in el.attrib:
        return default
    value = el.get(name, "")
    try:
        return int(value, 0)
    except ValueError:
        raise ManagerError(FILE_ERROR, f"Invalid value '{value}' in attribute '{name}' of "
                                       f"element <{el.tag}> in the settings") from None


def yes(value: bool) -> str:
    return "true" if value else "false"


def braced(uuid: str) -> str:
    return "{" + uuid + "}"


def unbraced(value: str | None) -> str:
    return (value or "").strip().strip("{}").lower()


def extradata_element(parent: ET.Element, items: dict[str, str]) -> None:
    if items:
        node = ET.SubElement(parent, "ExtraData")
        for key in sorted(items):
            ET.SubElement(node, "ExtraDataItem", name=key, value=items[key])


def read_extradata(parent: ET.Element) -> dict[str, str]:
    return {item.get("name", ""): item.get("value", "")
            for item in parent.findall("ExtraData/ExtraDataItem") if item.get("name")}
