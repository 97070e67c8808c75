"""The network adapters in the settings: modifyvm's adapter keys checked and stored, the .vbox XML as
VirtualBox writes it (read and written back), showvminfo's answer and the launch spec's cards."""

import os
import xml.etree.ElementTree as ET

import pytest

from services.ipc.network import CHIPS, NetAdapter, PortForward
from services.ipc.spec import LaunchSpec
from services.manager.errors import E_INVALIDARG, ManagerError
from services.manager.settings import Settings, machine_xml
from services.manager.settings.model import NIC_TYPES, Nat, Nic

NS = "{http://www.virtualbox.org/}"


@pytest.fixture
def settings(tmp_path):
    s = Settings(str(tmp_path / "home"))
    s.createvm(name="vm", ostype="Debian_64", register=True)
    return s


def nic(settings, n=1) -> dict:
    return settings.showvminfo(vm="vm")["nics"][n - 1]


def refused(settings, changes) -> str:
    before = open(settings.showvminfo(vm="vm")["settings_file"], "rb").read()
    with pytest.raises(ManagerError) as caught:
        settings.modifyvm(vm="vm", changes=changes)
    assert caught.value.code == E_INVALIDARG
    assert open(settings.showvminfo(vm="vm")["settings_file"], "rb").read() == before   # all or nothing
    return caught.value.message


def adapters_xml(settings) -> list[ET.Element]:
    root = ET.parse(settings.showvminfo(vm="vm")["settings_file"]).getroot()
    return root.findall(f"{NS}Machine/{NS}Hardware/{NS}Network/{NS}Adapter")


# ------------------------------------------------------------------------------------------------
# createvm

def test_createvm_gives_each_adapter_its_own_virtualbox_mac_and_the_os_types_card(settings, tmp_path):
    nics = settings.showvminfo(vm="vm")["nics"]
    macs = [n["mac"] for n in nics]
    assert len(macs) == 8 and len(set(macs)) == 8
    assert all(len(mac) == 12 and mac.startswith("080027") and mac == mac.upper() for mac in macs)
    assert [n["type"] for n in nics] == ["nat"] + ["none"] * 7
    assert {(n["adapter"], n["nictype"]) for n in nics} == {("I82540EM", "82540EM")}   # Debian_64's
    settings.createvm(name="xp", ostype="WindowsXP", register=True)
    assert settings.showvminfo(vm="xp")["nics"][0]["nictype"] == "82543GC"
    settings.createvm(name="old", ostype="Windows2000", register=True)
    assert settings.showvminfo(vm="old")["nics"][0]["nictype"] == "Am79C973"   # the OS type's, kept
    settings.createvm(name="plain", register=True)                          # no OS type: the PCnet
    assert settings.showvminfo(vm="plain")["nics"][0]["nictype"] == "Am79C973"
    assert settings.launch_spec("plain").nics[0].chip == "Am79C973"


# ------------------------------------------------------------------------------------------------
# modifyvm

def test_every_adapter_key_is_stored_and_shown(settings):
    settings.modifyvm(vm="vm", changes={
        "nic2": "NULL", "nictype2": "82545em", "macaddress2": "08:00:27:aa:bb:cc", "cableconnected2": "off",
        "natnet1": "10.0.3.0/24", "natdnshostresolver1": True, "natdnsproxy1": "on",
        "nattftpprefix1": "/srv/tftp", "nattftpfile1": "pxelinux.0",
        "natpf1": [["add", "web,tcp,127.0.0.1,8080,10.0.3.15,80"], ["add", "ssh,tcp,,2222,,22"]]})
    first, second = nic(settings, 1), nic(settings, 2)
    assert (second["type"], second["nictype"], second["adapter"], second["mac"], second["cable"]) == (
        "null", "82545EM", "I82545EM", "080027AABBCC", False)
    assert first["nat"] == {"network": "10.0.3.0/24", "dns_host_resolver": True, "dns_proxy": True,
                            "tftp_prefix": "/srv/tftp", "tftp_file": "pxelinux.0",
                            "forwards": ["ssh,tcp,,2222,,22", "web,tcp,127.0.0.1,8080,10.0.3.15,80"]}
    settings.modifyvm(vm="vm", changes={"natnet1": "default", "natpf1": [["delete", "web"]],
                                        "nictype1": "virtio", "cableconnected2": True})
    assert nic(settings, 1)["nat"]["network"] == "" and nic(settings, 1)["nat"]["forwards"] == ["ssh,tcp,,2222,,22"]
    assert (nic(settings, 1)["nictype"], nic(settings, 1)["adapter"], nic(settings, 2)["cable"]) == (
        "virtio", "Virtio", True)


def test_a_nat_rule_without_a_name_is_named_as_virtualbox_names_it(settings):
    settings.modifyvm(vm="vm", changes={"natpf1": ",udp,,5353,,53"})
    assert nic(settings)["nat"]["forwards"] == ["udp_5353_53,udp,,5353,,53"]


def test_an_abbreviated_nat_network_is_completed(settings):
    settings.modifyvm(vm="vm", changes={"natnet1": "192.168/16"})
    assert nic(settings)["nat"]["network"] == "192.168.0.0/16"


def test_mac_auto_makes_a_new_one_unlike_the_others(settings):
    before = [n["mac"] for n in settings.showvminfo(vm="vm")["nics"]]
    settings.modifyvm(vm="vm", changes={"macaddress3": "auto"})
    after = [n["mac"] for n in settings.showvminfo(vm="vm")["nics"]]
    assert after[2] != before[2] and after[2].startswith("080027") and len(set(after)) == 8


def test_the_nat_settings_survive_another_attachment(settings):
    settings.modifyvm(vm="vm", changes={"natpf1": "ssh,tcp,,2222,,22", "natnet1": "10.0.5.0/24"})
    settings.modifyvm(vm="vm", changes={"nic1": "intnet"})
    assert nic(settings)["network"] == "intnet"                    # VirtualBox's default network name
    [first] = [a for a in adapters_xml(settings) if a.get("slot") == "0"]
    assert first.find(f"{NS}DisabledModes/{NS}NAT").get("network") == "10.0.5.0/24"
    assert first.find(f"{NS}InternalNetwork").get("name") == "intnet"
    settings.modifyvm(vm="vm", changes={"nic1": "nat"})
    assert nic(settings)["nat"]["forwards"] == ["ssh,tcp,,2222,,22"]
    assert nic(settings)["nat"]["network"] == "10.0.5.0/24"


@pytest.mark.parametrize("changes,message", [
    ({"nic1": "wifi"}, "Invalid type 'wifi' specified for NIC 1 (none, null, nat, bridged, intnet, hostonly, "
                       "natnetwork, generic)"),
    ({"nictype4": "NE2000"}, "Invalid NIC type 'NE2000' specified for NIC 4 (Am79C970A, Am79C973, Am79C960, "
                             "82540EM, 82543GC, 82545EM, virtio)"),
    ({"macaddress1": "0800271234"}, "NIC 1: '0800271234' is not a MAC address (12 hexadecimal digits)"),
    ({"macaddress1": "010027123456"}, "NIC 1: MAC address 010027123456 is a multicast address"),
    ({"cableconnected1": "maybe"}, "Invalid value 'maybe' for 'cableconnected1': expected on or off"),
    ({"natnet1": "10.0.3.0/30"}, "NIC 1: NAT network 10.0.3.0/30 is too small (at most /28)"),
    ({"natnet1": "nat"}, "NIC 1: 'nat' is not a network (expected e.g. 10.0.2.0/24)"),
    ({"natdnshostresolver1": 2}, "Invalid value '2' for 'natdnshostresolver1': expected on or off"),
    ({"nattftpfile1": 7}, "Invalid value '7' for 'nattftpfile1': expected a string"),
    ({"natpf1": "ssh,tcp,,2222"}, "bad port-forwarding rule 'ssh,tcp,,2222' (expected name,tcp|udp,[hostip],"
                                  "hostport,[guestip],guestport)"),
    ({"natpf1": "ssh,icmp,,2222,,22"}, "port-forwarding protocol 'icmp': expected tcp or udp"),
    ({"natpf1": "ssh,tcp,,70000,,22"}, "port '70000' is not a number from 1 to 65535"),
    ({"natpf1": "ssh,tcp,localhost,2222,,22"}, "'localhost' is not an IPv4 address"),
    ({"natpf1": [["rename", "ssh"]]}, "Invalid value for 'natpf1': expected a rule, or a list of [\"add\", rule] "
                                      "and [\"delete\", name]"),
    ({"natpf1": [["delete", "ghost"]]}, "A NAT rule of this name does not exist"),
    ({"natpf1": ["ssh,tcp,,2222,,22", "ssh,udp,,2223,,22"]}, "A NAT rule of this name already exists"),
    ({"natpf1": ["ssh,tcp,,2222,,22", "other,tcp,,2222,,23"]},
     "A NAT rule for this host port and this host IP already exists"),
    ({"nic1": "null", "nic9": "nat"}, "Unknown setting 'nic9'"),
])
def test_bad_adapter_values_give_one_line_and_change_nothing(settings, changes, message):
    assert refused(settings, changes) == message


def test_a_rule_on_the_same_port_of_another_protocol_or_address_is_fine(settings):
    settings.modifyvm(vm="vm", changes={"natpf1": ["a,tcp,,2222,,22", "b,udp,,2222,,22", "c,tcp,127.0.0.1,2222,,22"]})
    assert [r.split(",")[0] for r in nic(settings)["nat"]["forwards"]] == ["a", "b", "c"]
    assert refused(settings, {"natpf1": "a,tcp,,3333,,22"}) == "A NAT rule of this name already exists"
    settings.modifyvm(vm="vm", changes={"natpf1": [["delete", "a"], ["add", "a,tcp,,3333,,22"]]})  # in order
    assert nic(settings)["nat"]["forwards"][0] == "a,tcp,,3333,,22"


def test_a_mac_another_adapter_has_is_refused(settings):
    other = nic(settings, 2)["mac"]
    assert refused(settings, {"macaddress1": other}) == \
        f"NIC 1: MAC address {other} is the address of another adapter of this machine"


def test_a_running_vm_takes_no_adapter_change_from_modifyvm(tmp_path):
    states = {}
    settings = Settings(str(tmp_path / "home"), vm_state=lambda uuid: states.get(uuid, "PoweredOff"))
    states[settings.createvm(name="vm", register=True)["uuid"]] = "Running"
    for changes in ({"natpf1": "ssh,tcp,,2222,,22"}, {"cableconnected1": False}, {"nic2": "nat"}):
        with pytest.raises(ManagerError, match=r"not mutable \(state is Running\)"):
            settings.modifyvm(vm="vm", changes=changes)


# ------------------------------------------------------------------------------------------------
# The .vbox file

VIRTUALBOX_VBOX = b"""<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{0b5e9a3c-1111-2222-3333-444455556666}" name="vagrant" OSType="Ubuntu_64">
    <Hardware>
      <Network>
        <Adapter slot="0" enabled="true" MACAddress="0800271E4C6B" type="82540EM">
          <NAT localhost-reachable="true">
            <DNS use-host-resolver="true"/>
            <Forwarding name="ssh" proto="1" hostip="127.0.0.1" hostport="2222" guestport="22"/>
            <Forwarding name="dns" proto="0" hostport="5353" guestip="10.0.2.15" guestport="53"/>
          </NAT>
        </Adapter>
        <Adapter slot="1" enabled="true" MACAddress="080027D11C4A" cable="false" type="virtio">
          <DisabledModes>
            <NAT network="10.0.9.0/24"/>
            <InternalNetwork name="lab"/>
          </DisabledModes>
          <HostOnlyInterface name="vboxnet0"/>
        </Adapter>
        <Adapter slot="2" MACAddress="080027AA0002" type="Am79C973">
          <NAT/>
        </Adapter>
        <Adapter slot="3" enabled="true" MACAddress="080027AA0003"/>
      </Network>
    </Hardware>
  </Machine>
</VirtualBox>
"""


def test_a_vbox_file_written_by_virtualbox_reads_and_writes_back():
    m = machine_xml.from_xml(VIRTUALBOX_VBOX, "vagrant.vbox")
    first, second, third, fourth = m.nics[:4]
    assert (first.mode, first.adapter, first.mac, first.cable) == ("nat", "82540EM", "0800271E4C6B", True)
    assert first.nat == Nat(dns_host_resolver=True, attributes={"localhost-reachable": "true"}, forwards=[
        PortForward("dns", "udp", "", 5353, "10.0.2.15", 53), PortForward("ssh", "tcp", "127.0.0.1", 2222, "", 22)])
    assert (second.mode, second.adapter, second.cable) == ("hostonly", "virtio", False)
    assert second.networks == {"hostonly": "vboxnet0", "intnet": "lab"} and second.nat.network == "10.0.9.0/24"
    assert (third.mode, third.adapter) == ("none", "Am79C973")             # enabled defaults to false
    assert (fourth.mode, fourth.adapter) == ("null", "Am79C973")           # no attachment, no type: defaults
    assert m.nics[4:] == [Nic()] * 4
    assert machine_xml.from_xml(machine_xml.to_xml(m), "vagrant.vbox") == m
    written = ET.fromstring(machine_xml.to_xml(m))
    adapters = written.findall(f"{NS}Machine/{NS}Hardware/{NS}Network/{NS}Adapter")
    assert [a.get("slot") for a in adapters] == ["0", "1", "2", "3"]
    nat = adapters[0].find(f"{NS}NAT")
    assert nat.get("localhost-reachable") == "true" and nat.get("network") is None
    assert nat.find(f"{NS}DNS").attrib == {"use-host-resolver": "true"}
    assert [f.attrib for f in nat.findall(f"{NS}Forwarding")] == [
        {"name": "dns", "proto": "0", "hostport": "5353", "guestip": "10.0.2.15", "guestport": "53"},
        {"name": "ssh", "proto": "1", "hostip": "127.0.0.1", "hostport": "2222", "guestport": "22"}]
    assert adapters[1].get("cable") == "false" and adapters[0].get("cable") is None
    assert adapters[1].find(f"{NS}HostOnlyInterface").get("name") == "vboxnet0"
    assert {e.tag for e in adapters[1].find(f"{NS}DisabledModes")} == {f"{NS}NAT", f"{NS}InternalNetwork"}


def test_adapter_types_of_earlier_headbox_files_read_as_virtualbox_names():
    data = VIRTUALBOX_VBOX.replace(b'type="82540EM"', b'type="I82540EM"')
    assert machine_xml.from_xml(data, "x.vbox").nics[0].adapter == "82540EM"


def test_tftp_and_a_nat_network_are_written_only_when_set(settings):
    settings.modifyvm(vm="vm", changes={"nattftpprefix1": "/srv", "natnet1": "10.0.3.0/24"})
    nat = adapters_xml(settings)[0].find(f"{NS}NAT")
    assert nat.get("network") == "10.0.3.0/24" and nat.find(f"{NS}TFTP").attrib == {"prefix": "/srv"}
    assert nat.find(f"{NS}DNS") is None
    settings.modifyvm(vm="vm", changes={"nattftpprefix1": "", "natnet1": "default"})
    nat = adapters_xml(settings)[0].find(f"{NS}NAT")
    assert nat.attrib == {} and list(nat) == []


# ------------------------------------------------------------------------------------------------
# The launch spec

def test_the_launch_spec_has_one_card_per_enabled_adapter(settings):
    settings.modifyvm(vm="vm", changes={
        "natpf1": ["ssh,tcp,127.0.0.1,2222,,22", "dns,udp,,5353,,53"], "natnet1": "10.0.3.0/24",
        "natdnshostresolver1": True, "nattftpprefix1": "/srv/tftp", "nattftpfile1": "boot.pxe",
        "nic3": "null", "nictype3": "82543GC", "cableconnected3": False})
    info = settings.showvminfo(vm="vm")
    first, third = settings.launch_spec("vm").nics
    assert first == NetAdapter(slot=0, chip="82540EM", mac=info["nics"][0]["mac"], attachment="nat", cable=True,
                               nat_network="10.0.3.0/24", dns_host_resolver=True, tftp_prefix="/srv/tftp",
                               tftp_file="boot.pxe", forwards=(PortForward("dns", "udp", "", 5353, "", 53),
                                                               PortForward("ssh", "tcp", "127.0.0.1", 2222, "", 22)))
    assert (third.slot, third.chip, third.attachment, third.cable) == (2, "82543GC", "null", False)
    settings.modifyvm(vm="vm", changes={"natnet1": "default"})
    assert settings.launch_spec("vm").nics[0].nat_network == "10.0.2.0/24"
    # What the processes load from the spec file is what the settings said.
    spec = LaunchSpec.from_bytes(settings.launch_spec("vm").to_bytes()).validate()
    assert spec.nics == settings.launch_spec("vm").nics


def test_a_vm_with_every_adapter_off_has_no_card(settings):
    settings.modifyvm(vm="vm", changes={"nic1": "none"})
    assert settings.launch_spec("vm").nics == []


@pytest.mark.parametrize("mode,name", [("bridged", "Bridged Interface"), ("intnet", "Internal Network"),
                                       ("hostonly", "Host-only Interface"), ("natnetwork", "NAT Network"),
                                       ("generic", "Generic Driver")])
def test_attachments_other_than_nat_and_null_cannot_run(settings, mode, name):
    settings.modifyvm(vm="vm", changes={"nic2": mode})
    with pytest.raises(ManagerError) as caught:
        settings.launch_spec("vm")
    assert (caught.value.code, caught.value.message) == (
        E_INVALIDARG, f"NIC 2: the attachment {mode} ({name}) is not available: only nat and null (not "
                      "attached) are; use --nic2 nat, null or none")


@pytest.mark.parametrize("card", [card for card in NIC_TYPES if card not in CHIPS])
def test_cards_not_emulated_cannot_run(settings, card):
    settings.modifyvm(vm="vm", changes={"nictype1": card})
    with pytest.raises(ManagerError) as caught:
        settings.launch_spec("vm")
    assert caught.value.message == (f"NIC 1: the adapter type {card} is not emulated (available: "
                                    f"{', '.join(CHIPS)}); use --nictype1 82540EM")
    settings.modifyvm(vm="vm", changes={"nic1": "none"})        # a disabled adapter's card does not matter
    assert settings.launch_spec("vm").nics == []


def test_a_hand_edited_file_is_refused_at_start_not_at_read(settings):
    path = settings.showvminfo(vm="vm")["settings_file"]
    with open(path, "rb") as f:
        data = f.read()
    data = data.replace(b"<NAT />", b'<NAT><Forwarding name="bad" proto="1" guestport="22"/></NAT>')
    data = data.replace(b'MACAddress="', b'MACAddress="X', 1)
    with open(path, "wb") as f:
        f.write(data)
    assert nic(settings)["nat"]["forwards"] == ["bad,tcp,,0,,22"]
    with pytest.raises(ManagerError, match=r"^NIC 1: 'X[0-9A-F]{12}' is not a MAC address"):
        settings.launch_spec("vm")
    settings.modifyvm(vm="vm", changes={"macaddress1": "auto"})
    with pytest.raises(ManagerError, match=r"^NIC 1: port '0' is not a number from 1 to 65535$"):
        settings.launch_spec("vm")
    settings.modifyvm(vm="vm", changes={"natpf1": [["delete", "bad"]]})
    assert settings.launch_spec("vm").nics[0].forwards == ()
    assert os.path.exists(path + "-prev")
