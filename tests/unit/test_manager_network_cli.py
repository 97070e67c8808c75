"""VBoxManage's network adapter options and controlvm actions turned into requests, and showvminfo's
NIC lines (human and --machinereadable, the keys Vagrant parses) from a showvminfo answer."""

import re

import pytest

from services.manager.cli import format as output
from services.manager.cli.arguments import UsageError, parse


def call(*argv):
    return parse(list(argv), "/home/user", lambda path: "")


def error(*argv) -> str:
    with pytest.raises(UsageError) as caught:
        call(*argv)
    return str(caught.value)


# ------------------------------------------------------------------------------------------------
# modifyvm and controlvm

def test_modifyvm_adapter_options():
    c = call("modifyvm", "vm", "--nic2", "NAT", "--nictype2", "82545em", "--macaddress2", "auto",
             "--cableconnected2", "off", "--natnet2", "10.0.3.0/24", "--natdnshostresolver2", "on",
             "--natdnsproxy2", "off", "--nattftpprefix2", "/srv/tftp", "--nattftpfile2", "pxelinux.0")
    assert c.fields["changes"] == {
        "nic2": "nat", "nictype2": "82545EM", "macaddress2": "auto", "cableconnected2": False,
        "natnet2": "10.0.3.0/24", "natdnshostresolver2": True, "natdnsproxy2": False,
        "nattftpprefix2": "/srv/tftp", "nattftpfile2": "pxelinux.0"}


def test_natpf_adds_and_deletes_in_order():
    c = call("modifyvm", "vm", "--natpf1", "guestssh,tcp,,2222,,22", "--natpf1", "delete", "web",
             "--natpf1=delete", "old", "--natpf1", ",udp,,5353,,53")
    assert c.fields["changes"] == {"natpf1": [["add", "guestssh,tcp,,2222,,22"], ["delete", "web"],
                                              ["delete", "old"], ["add", ",udp,,5353,,53"]]}


def test_virtualbox_7_dashed_option_names():
    c = call("modifyvm", "vm", "--nic-type1", "virtio", "--mac-address1", "080027000001", "--cable-connected1",
             "on", "--nat-pf1", "delete", "ssh", "--nat-net1", "default", "--nat-dns-host-resolver1", "off",
             "--nat-dns-proxy1", "on", "--nat-tftp-prefix1", "/t", "--nat-tftp-file1", "f")
    assert c.fields["changes"] == {
        "nictype1": "virtio", "macaddress1": "080027000001", "cableconnected1": True, "natpf1": [["delete", "ssh"]],
        "natnet1": "default", "natdnshostresolver1": False, "natdnsproxy1": True, "nattftpprefix1": "/t",
        "nattftpfile1": "f"}


def test_controlvm_network_actions():
    assert call("controlvm", "vm", "setlinkstate1", "off").fields == {
        "vm": "vm", "action": "setlinkstate1", "args": ["off"]}
    assert call("controlvm", "vm", "natpf2", "ssh,tcp,,2222,,22").fields == {
        "vm": "vm", "action": "natpf2", "args": ["ssh,tcp,,2222,,22"]}
    assert call("controlvm", "vm", "natpf2", "delete", "ssh").fields == {
        "vm": "vm", "action": "natpf2", "args": ["delete", "ssh"]}


@pytest.mark.parametrize("argv,message", [
    (("modifyvm", "vm", "--nic1", "wifi"),
     "Invalid --nic1 argument 'wifi' (none, null, nat, bridged, intnet, hostonly, natnetwork, generic)"),
    (("modifyvm", "vm", "--nictype1", "NE2000"),
     "Invalid --nictype1 argument 'NE2000' (Am79C970A, Am79C973, Am79C960, 82540EM, 82543GC, 82545EM, virtio)"),
    (("modifyvm", "vm", "--cableconnected1", "yes"), "Invalid --cableconnected1 argument 'yes' (on or off)"),
    (("modifyvm", "vm", "--nic9", "nat"), "Unknown option: --nic9"),
    (("modifyvm", "vm", "--natpf1", "delete"), "Missing argument to '--natpf1'"),
    (("controlvm", "vm", "setlinkstate1"), "controlvm setlinkstate1: missing on or off"),
    (("controlvm", "vm", "setlinkstate1", "up"), "Invalid setlinkstate1 argument 'up' (on or off)"),
    (("controlvm", "vm", "setlinkstate9", "on"), "Invalid parameter 'setlinkstate9'"),
    (("controlvm", "vm", "natpf1", "delete"), "controlvm natpf1 delete: missing a rule name"),
    (("controlvm", "vm", "natpf1"),
     "controlvm natpf1: missing a rule (name,tcp|udp,[hostip],hostport,[guestip],guestport) or delete <name>"),
])
def test_mistakes_give_one_line(argv, message):
    assert error(*argv) == message


# ------------------------------------------------------------------------------------------------
# showvminfo

def nic(slot, kind, **more):
    base = {"slot": slot, "type": kind, "adapter": "I82540EM", "nictype": "82540EM", "mac": f"08002700000{slot}",
            "cable": True, "network": "",
            "nat": {"network": "", "dns_host_resolver": False, "dns_proxy": False, "tftp_prefix": "",
                    "tftp_file": "", "forwards": []}}
    base.update(more)
    return base


VM = {"name": "vm", "uuid": "u", "state": "PoweredOff", "nics": [
    nic(1, "nat", nat={"network": "", "forwards": ["ssh,tcp,,2222,,22", "web,tcp,127.0.0.1,8080,10.0.2.15,80"]}),
    nic(2, "null", cable=False, nictype="82545EM"),
    nic(3, "intnet", network="lab"),
    nic(4, "nat", nat={"network": "10.0.3.0/24", "forwards": []}),
    nic(5, "generic", network="UDPTunnel"),
    nic(6, "none"), nic(7, "none"), nic(8, "none")]}


def test_showvminfo_nic_lines():
    lines = output.showvminfo(VM).splitlines()
    start = lines.index(next(line for line in lines if line.startswith("NIC 1:")))
    assert lines[start:start + 15] == [
        "NIC 1:                       MAC: 080027000001, Attachment: NAT, Cable connected: on, Trace: off "
        "(file: none), Type: 82540EM, Reported speed: 0 Mbps, Boot priority: 0, Promisc Policy: deny, "
        "Bandwidth group: none",
        "NIC 1 Settings:  MTU: 0, Socket (send: 64, receive: 64), TCP Window (send:64, receive: 64)",
        "NIC 1 Rule(0):   name = ssh, protocol = tcp, host ip = , host port = 2222, guest ip = , guest port = 22",
        "NIC 1 Rule(1):   name = web, protocol = tcp, host ip = 127.0.0.1, host port = 8080, guest ip = 10.0.2.15, "
        "guest port = 80",
        "NIC 2:                       MAC: 080027000002, Attachment: none, Cable connected: off, Trace: off "
        "(file: none), Type: 82545EM, Reported speed: 0 Mbps, Boot priority: 0, Promisc Policy: deny, "
        "Bandwidth group: none",
        "NIC 3:                       MAC: 080027000003, Attachment: Internal Network 'lab', Cable connected: on, "
        "Trace: off (file: none), Type: 82540EM, Reported speed: 0 Mbps, Boot priority: 0, Promisc Policy: deny, "
        "Bandwidth group: none",
        "NIC 4:                       MAC: 080027000004, Attachment: NAT, Cable connected: on, Trace: off "
        "(file: none), Type: 82540EM, Reported speed: 0 Mbps, Boot priority: 0, Promisc Policy: deny, "
        "Bandwidth group: none",
        "NIC 4 Settings:  MTU: 0, Socket (send: 64, receive: 64), TCP Window (send:64, receive: 64)",
        "NIC 5:                       MAC: 080027000005, Attachment: Generic 'UDPTunnel' {  }, Cable connected: on, "
        "Trace: off (file: none), Type: 82540EM, Reported speed: 0 Mbps, Boot priority: 0, Promisc Policy: deny, "
        "Bandwidth group: none",
        "NIC 6:                       disabled",
        "NIC 7:                       disabled",
        "NIC 8:                       disabled",
        "UART 1:                      disabled",
        "USB:                         disabled",
        "VRDE:                        disabled"]


def test_showvminfo_machine_readable_nic_keys():
    lines = output.showvminfo(VM, machine_readable=True).splitlines()
    start = lines.index('natnet1="nat"')
    assert lines[start:start + 38] == [
        'natnet1="nat"', 'macaddress1="080027000001"', 'cableconnected1="on"', 'nic1="nat"', 'nictype1="82540EM"',
        'nicspeed1="0"', 'mtu="0"', 'sockSnd="64"', 'sockRcv="64"', 'tcpWndSnd="64"', 'tcpWndRcv="64"',
        'Forwarding(0)="ssh,tcp,,2222,,22"', 'Forwarding(1)="web,tcp,127.0.0.1,8080,10.0.2.15,80"',
        'macaddress2="080027000002"', 'cableconnected2="off"', 'nic2="null"', 'nictype2="82545EM"', 'nicspeed2="0"',
        'intnet3="lab"', 'macaddress3="080027000003"', 'cableconnected3="on"', 'nic3="intnet"', 'nictype3="82540EM"',
        'nicspeed3="0"',
        'natnet4="10.0.3.0/24"', 'macaddress4="080027000004"', 'cableconnected4="on"', 'nic4="nat"',
        'nictype4="82540EM"', 'nicspeed4="0"', 'mtu="0"', 'sockSnd="64"', 'sockRcv="64"', 'tcpWndSnd="64"',
        'tcpWndRcv="64"',
        'generic5="UDPTunnel"', 'macaddress5="080027000005"', 'cableconnected5="on"']
    assert lines[start + 38:start + 44] == ['nic5="Generic"', 'nictype5="82540EM"', 'nicspeed5="0"',
                                            'nic6="none"', 'nic7="none"', 'nic8="none"']


def test_vagrants_parsing_finds_the_adapter_of_each_forwarding_rule():
    """Vagrant (driver/version_5_0.rb read_forwarded_ports) takes nic<N>= as the adapter of the
    Forwarding lines after it, and reads macaddress1 and nic<N> with these patterns."""
    current, found = None, []
    text = output.showvminfo(VM, machine_readable=True)
    for line in text.split("\n"):
        match = re.match(r'^nic(\d+)=".+?"$', line)
        if match:
            current = int(match[1])
        match = re.match(r'^Forwarding.+?="(.+?),.+?,(.*?),(.+?),.*?,(.+?)"$', line)
        if match:
            found.append((current, match[1], match[3], match[4]))
    assert found == [(1, "ssh", "2222", "22"), (1, "web", "8080", "80")]
    assert re.search(r'^macaddress1="(.+?)"$', text, re.M)[1] == "080027000001"
