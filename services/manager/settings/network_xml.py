"""A network adapter to the <Adapter> element of a VirtualBox .vbox file and back: its attachment,
its NAT engine (<NAT>, <DNS>, <TFTP>, <Forwarding>) and the attachments it is not using now."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from services.ipc.network import PortForward

from .model import DEFAULT_NIC_TYPE, Nat, Nic
from .xmlutil import bool_attr, int_attr, yes

# The element each attachment is stored as, and the attribute naming its network (None: NAT, whose
# settings are elements of their own). "null" has no element: an enabled adapter without one.
ATTACHMENT_ELEMENTS = {"nat": ("NAT", None), "bridged": ("BridgedInterface", "name"),
                       "intnet": ("InternalNetwork", "name"), "hostonly": ("HostOnlyInterface", "name"),
                       "generic": ("GenericInterface", "driver"), "natnetwork": ("NATNetwork", "name")}
_MODE_OF = {element: mode for mode, (element, _) in ATTACHMENT_ELEMENTS.items()}
_MODE_OF["HostInterface"] = "bridged"          # VirtualBox 2's name, still read by VirtualBox
PROTOCOL_NUMBERS = {"udp": 0, "tcp": 1}       # VirtualBox's NATProtocol values, as the file stores them
_PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}


def adapter_element(parent: ET.Element, slot: int, nic: Nic) -> None:
    """<Adapter> for the adapter in `slot` (0-7); an adapter never touched writes nothing."""
    if nic == Nic():
        return
    el = ET.SubElement(parent, "Adapter", slot=str(slot), enabled=yes(nic.mode != "none"))
    if nic.mac:
        el.set("MACAddress", nic.mac)
    if not nic.cable:
        el.set("cable", "false")       # VirtualBox writes the cable only when it is pulled
    el.set("type", nic.adapter)
    # What the adapter is not attached to now, VirtualBox keeps under <DisabledModes>.
    unused = [mode for mode in ATTACHMENT_ELEMENTS if mode != nic.mode and _has_settings(nic, mode)]
    if unused:
        disabled = ET.SubElement(el, "DisabledModes")
        for mode in unused:
            _attachment_element(disabled, mode, nic)
    if nic.mode in ATTACHMENT_ELEMENTS:
        _attachment_element(el, nic.mode, nic)


def _has_settings(nic: Nic, mode: str) -> bool:
    return nic.nat != Nat() if mode == "nat" else bool(nic.networks.get(mode))


def _attachment_element(parent: ET.Element, mode: str, nic: Nic) -> None:
    tag, attribute = ATTACHMENT_ELEMENTS[mode]
    if attribute is None:
        _nat_element(parent, nic.nat)
        return
    el = ET.SubElement(parent, tag)
    if nic.networks.get(mode):
        el.set(attribute, nic.networks[mode])


def _nat_element(parent: ET.Element, nat: Nat) -> None:
    el = ET.SubElement(parent, "NAT", **nat.attributes)
    if nat.network:
        el.set("network", nat.network)
    if nat.dns_proxy or nat.dns_host_resolver:
        dns = ET.SubElement(el, "DNS")
        if nat.dns_proxy:
            dns.set("use-proxy", "true")
        if nat.dns_host_resolver:
            dns.set("use-host-resolver", "true")
    if nat.tftp_prefix or nat.tftp_file:
        tftp = ET.SubElement(el, "TFTP")
        if nat.tftp_prefix:
            tftp.set("prefix", nat.tftp_prefix)
        if nat.tftp_file:
            tftp.set("boot-file", nat.tftp_file)
    for rule in nat.forwards:
        # VirtualBox leaves out an empty address (every address) and port 0.
        forward = ET.SubElement(el, "Forwarding", name=rule.name,
                                proto=str(PROTOCOL_NUMBERS.get(rule.protocol, rule.protocol)))
        for attribute, value in (("hostip", rule.host_ip), ("hostport", rule.host_port),
                                 ("guestip", rule.guest_ip), ("guestport", rule.guest_port)):
            if value:
                forward.set(attribute, str(value))


def read_adapter(el: ET.Element) -> Nic:
    """The adapter an <Adapter> element describes (its slot is the caller's)."""
    nic = Nic(mode="null", adapter=el.get("type", DEFAULT_NIC_TYPE), mac=el.get("MACAddress", "").upper(),
              cable=bool_attr(el, "cable", True))
    for child in el:
        if child.tag == "DisabledModes":
            for unused in child:
                _read_attachment(unused, nic)
        elif child.tag in _MODE_OF:
            nic.mode = _MODE_OF[child.tag]
            _read_attachment(child, nic)
    if not bool_attr(el, "enabled", False):
        nic.mode = "none"
    return nic


def _read_attachment(el: ET.Element, nic: Nic) -> None:
    mode = _MODE_OF.get(el.tag)
    if mode == "nat":
        nic.nat = _read_nat(el)
    elif mode is not None and el.get(ATTACHMENT_ELEMENTS[mode][1]):
        nic.networks[mode] = el.get(ATTACHMENT_ELEMENTS[mode][1])


def _read_nat(el: ET.Element) -> Nat:
    dns, tftp = el.find("DNS"), el.find("TFTP")
    forwards = []
    for rule in el.findall("Forwarding"):
        proto = int_attr(rule, "proto", PROTOCOL_NUMBERS["tcp"])
        # Not checked here: a rule a hand-edited file spoils is refused when the VM starts.
        forwards.append(PortForward(rule.get("name", ""), _PROTOCOL_NAMES.get(proto, str(proto)),
                                    rule.get("hostip", ""), int_attr(rule, "hostport", 0),
                                    rule.get("guestip", ""), int_attr(rule, "guestport", 0)))
    return Nat(network=el.get("network", ""),
               dns_host_resolver=bool_attr(dns, "use-host-resolver", False),
               dns_proxy=bool_attr(dns, "use-proxy", False),
               tftp_prefix=tftp.get("prefix", "") if tftp is not None else "",
               tftp_file=tftp.get("boot-file", "") if tftp is not None else "",
               forwards=sorted(forwards, key=lambda rule: rule.name),
               attributes={k: v for k, v in el.attrib.items() if k != "network"})
