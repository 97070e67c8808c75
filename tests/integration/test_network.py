"""The guest's network cards with the NAT (issue 12), with Linux's own drivers as the oracle: one
guest boots with every card VirtualBox offers, each on its own NAT: 82540EM (10.0.2.0/24),
82545EM (10.0.3.0/24, host resolver), PCnet-FAST III (10.0.4.0/24), virtio-net (10.0.5.0/24),
an 82543GC (10.0.6.0/24) whose cable starts unplugged, and a PCnet-PCI II attached to nothing. Every test below talks to that guest: DHCP leases,
downloads from a host server, port forwards fixed and added at run time, DNS, link state, and a
guest that misbehaves."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import socket
import threading
import time
import urllib.request

import pytest

from services.demo.linux_iso import linux_iso
from services.ipc import ops
from services.ipc.control import ControlClient, ControlError
from services.ipc.naming import endpoint
from services.ipc.network import NetAdapter, PortForward
from services.ipc.vrde import VrdeConfig
from tests.support.rdp_test_client import RdpClient
from tests.support.serial_guest import Budget, GuestVm
from tests.waiting import free_port

DOWNLOAD_BYTES = 8 << 20


class HostWebServer:
    """An HTTP server on the host's 127.0.0.1, which the guest reaches as 10.0.2.2."""

    def __init__(self, folder):
        self.port = free_port()
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    folder = tmp_path_factory.mktemp("network")
    payload = os.urandom(DOWNLOAD_BYTES)
    (folder / "payload.bin").write_bytes(payload)
    web = HostWebServer(folder)
    forward_port = free_port()
    nics = [NetAdapter(0, "82540EM", "080027A1B2C3",
                       forwards=(PortForward.parse(f"web,tcp,127.0.0.1,{forward_port},,80"),)),
            NetAdapter(1, "82545EM", "080027A1B2C4", nat_network="10.0.3.0/24", dns_host_resolver=True),
            NetAdapter(2, "82543GC", "080027A1B2C5", nat_network="10.0.6.0/24", cable=False),
            NetAdapter(3, "Am79C973", "080027A1B2C6", nat_network="10.0.4.0/24"),
            NetAdapter(4, "virtio", "080027A1B2C7", nat_network="10.0.5.0/24"),
            NetAdapter(5, "Am79C970A", "080027A1B2C8", attachment="null")]
    rdp_port = free_port()
    vrde = VrdeConfig(vm_name="net", enabled=True, ports=str(rdp_port), address="127.0.0.1", state_dir=str(folder))
    vm = GuestVm("net", [f"1:0:dvd:{linux_iso()}"], folder, Budget(900), nics=nics, vrde=vrde)
    vm.rdp_port = rdp_port
    try:
        vm.start()
        vm.boot()
        vm.run("mkdir -p /www && echo hello-from-the-guest > /www/index.html && httpd -h /www -p 80")
        vm.payload_md5 = hashlib.md5(payload).hexdigest()
        vm.web, vm.forward_port = web, forward_port
        yield vm
    finally:
        print(vm.diagnostics() if vm.processes.vcpu is not None else "")
        vm.close()
        web.close()


def interfaces(vm) -> dict[str, str]:
    """Interface name -> MAC address, from the guest's sysfs."""
    out = vm.run("for i in /sys/class/net/eth*; do echo ${i##*/} $(cat $i/address); done")
    return dict(line.split() for line in out.splitlines() if line.startswith("eth"))


def name_of(vm, mac: str) -> str:
    return {v: k for k, v in interfaces(vm).items()}[mac]


def lease(vm, interface: str) -> re.Match:
    vm.run(f"ip link set {interface} up")
    out = vm.run(f"udhcpc -i {interface} -n -q -t 10 -T 1 -s /etc/udhcpc/default.script", timeout=90)
    match = re.search(r"DHCP-LEASE (\S+) (\S+) router (\S+) dns (.*)", out)
    assert match, f"no lease on {interface}:\n{out}"
    return match


def test_e1000_gets_virtualbox_nat_lease(net):
    guest = name_of(net, "08:00:27:a1:b2:c3")
    assert "e1000" in net.run(f"readlink /sys/class/net/{guest}/device/driver")
    match = lease(net, guest)
    assert match.group(2) == "10.0.2.15" and match.group(3) == "10.0.2.2"
    assert match.group(4).split() == ["10.0.2.3"]
    assert "1000 Mbps Full Duplex" in net.run(f"dmesg | grep '{guest} NIC Link is Up'")


def test_guest_downloads_from_the_host_intact(net):
    out = net.run(f"wget -q -O /tmp/payload http://10.0.2.2:{net.web.port}/payload.bin && md5sum /tmp/payload"
                  " && rm /tmp/payload", timeout=240)
    assert net.payload_md5 in out


@pytest.mark.parametrize("mac, driver, network", [("08:00:27:a1:b2:c6", "pcnet32", "10.0.4"),
                                                  ("08:00:27:a1:b2:c7", "virtio_net", "10.0.5")])
def test_pcnet_and_virtio_get_leases_and_download_intact(net, mac, driver, network):
    guest = name_of(net, mac)
    assert net.run(f"readlink /sys/class/net/{guest}/device/driver").strip().endswith("/" + driver)
    match = lease(net, guest)
    assert match.group(2) == f"{network}.15" and match.group(3) == f"{network}.2"
    out = net.run(f"wget -q -O - http://{network}.2:{net.web.port}/payload.bin | md5sum", timeout=300)
    assert net.payload_md5 in out


def test_port_forward_reaches_the_guest_web_server(net):
    body = urllib.request.urlopen(f"http://127.0.0.1:{net.forward_port}/index.html", timeout=30).read()
    assert body == b"hello-from-the-guest\n"


def control(vm, process: str, request):
    client = ControlClient(endpoint(vm.vm_id, f"control-{process}"), timeout_ms=10_000)
    try:
        return client.call(request)
    finally:
        client.close()


def test_port_forward_added_and_deleted_at_run_time(net):
    port = free_port()
    control(net, "devices", ops.PortForward(slot=0, rule=f"late,tcp,127.0.0.1,{port},,80"))
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30).read()
    assert body == b"hello-from-the-guest\n"
    with pytest.raises(ControlError, match="exists already"):
        control(net, "devices", ops.PortForward(slot=0, rule=f"late,tcp,127.0.0.1,{free_port()},,80"))
    control(net, "devices", ops.PortForward(slot=0, rule="late", delete=True))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(ControlError, match="no port-forwarding rule named 'late'"):
        control(net, "devices", ops.PortForward(slot=0, rule="late", delete=True))


def test_second_card_has_its_own_nat_and_the_host_resolver(net):
    guest = name_of(net, "08:00:27:a1:b2:c4")
    match = lease(net, guest)
    assert match.group(2) == "10.0.3.15" and match.group(3) == "10.0.3.2"
    out = net.run("nslookup localhost 10.0.3.3", timeout=60)
    assert re.search(r"Address:\s+127\.0\.0\.1", out), out
    # the first NAT does not answer for the second network: each VM adapter is its own NAT
    out = net.run(f"wget -q -O - http://10.0.3.2:{net.web.port}/payload.bin | md5sum", timeout=240)
    assert net.payload_md5 in out


def test_every_card_probed_without_a_hardware_error(net):
    assert "Hardware Error" not in net.run("dmesg")
    assert len(interfaces(net)) == 6


def test_card_attached_to_nothing_has_no_carrier(net):
    guest = name_of(net, "08:00:27:a1:b2:c8")
    assert net.run(f"readlink /sys/class/net/{guest}/device/driver").strip().endswith("/pcnet32")
    net.run(f"ip link set {guest} up")
    time.sleep(3)
    assert carrier(net, guest) == "0"


def test_82543_with_its_cable_plugged_in_at_run_time_gets_a_lease(net):
    guest = name_of(net, "08:00:27:a1:b2:c5")
    net.run(f"ip link set {guest} up")
    time.sleep(3)
    assert carrier(net, guest) == "0"                      # created with --cableconnected3 off
    control(net, "vcpu", ops.LinkState(slot=2, up=True))
    deadline = time.monotonic() + 30
    while carrier(net, guest) != "1":
        assert time.monotonic() < deadline, "the 82543's driver never saw the cable plugged in"
        time.sleep(1)
    match = lease(net, guest)
    assert match.group(2) == "10.0.6.15"
    out = net.run(f"wget -q -O - http://10.0.6.2:{net.web.port}/payload.bin | md5sum", timeout=300)
    assert net.payload_md5 in out


def carrier(vm, interface: str) -> str:
    return vm.run(f"cat /sys/class/net/{interface}/carrier", check=False).strip()


def test_pulling_the_cable_is_seen_and_plugging_it_back_restores_traffic(net):
    guest = name_of(net, "08:00:27:a1:b2:c3")
    lease(net, guest)
    control(net, "vcpu", ops.LinkState(slot=0, up=False))
    deadline = time.monotonic() + 30
    while carrier(net, guest) != "0":
        assert time.monotonic() < deadline, "the guest's driver never saw the link go down"
        time.sleep(1)
    assert "NIC Link is Down" in net.run(f"dmesg | grep '{guest} NIC Link is Down' | tail -1")
    assert net.run("ping -c 1 -W 2 10.0.2.2", check=False, timeout=30).count("bytes from") == 0
    control(net, "vcpu", ops.LinkState(slot=0, up=True))
    deadline = time.monotonic() + 30
    while carrier(net, guest) != "1":
        assert time.monotonic() < deadline, "the guest's driver never saw the link come back"
        time.sleep(1)
    out = net.run("ping -c 3 -W 5 10.0.2.2", check=False, timeout=60)
    assert "bytes from 10.0.2.2" in out, out
    with pytest.raises(ControlError, match="no network adapter 8"):
        control(net, "vcpu", ops.LinkState(slot=7, up=True))


def test_garbage_from_the_guest_harms_no_process_and_no_other_card(net):
    """Runs last: it takes the second card from its driver. The guest programs that card with
    a transmit ring in its kernel's code (2048 descriptors of whatever is there: random addresses,
    lengths, contexts and TSO sizes) and a receive ring outside RAM, and floods the first NAT with
    UDP; an RDP client keeps getting screen updates meanwhile; afterwards both processes live
    and the first card still downloads intact."""
    lease(net, name_of(net, "08:00:27:a1:b2:c3"))
    rdp = RdpClient(net.rdp_port)
    rdp.activate()
    rdp.graphics(10)                                           # the first screen
    guest = name_of(net, "08:00:27:a1:b2:c4")
    function = net.run(f"basename $(readlink /sys/class/net/{guest}/device)").strip()
    bar = int(net.run(f"cut -d' ' -f1 /sys/bus/pci/devices/{function}/resource | head -1").strip(), 16)
    net.run(f"echo {function} > /sys/bus/pci/drivers/e1000/unbind")
    kernel_code = int(net.run("grep 'Kernel code' /proc/iomem").split("-")[0].strip(), 16)
    writes = [(0x0400, 0x2),                                   # TCTL: transmit on
              (0x3800, kernel_code + 0x10000), (0x3804, 0), (0x3808, 2048 * 16), (0x3810, 0),
              (0x3818, 2047),                                  # TDT: go
              (0x2800, 0xFFFFF000), (0x2804, 0x0FFFFFFF), (0x2808, 4096), (0x2810, 0), (0x2818, 100),
              (0x0100, 0x2 | 0x8),                             # RCTL: receive everything
              (0x3808, 4096), (0x3810, 0), (0x3800, 0x00000000), (0x3818, 255)]
    net.run("; ".join(f"devmem 0x{bar + offset:x} 32 0x{value:x}" for offset, value in writes), timeout=240)
    net.run("(dd if=/dev/zero bs=1000 count=20000 2>/dev/null | nc -u -w 1 10.0.2.2 9; echo FLOOD-$((1+1))-DONE) & true")
    try:
        for corner in range(3):                                # the screen still answers during the flood
            started = time.monotonic()
            rdp.refresh(64 * corner, 0, 64, 64)
            assert rdp.graphics(10) > 0, "the RDP server sent no update for a refresh during the flood"
            print(f"refresh answered in {time.monotonic() - started:.2f} s during the flood")
    finally:
        rdp.close()
    net.wait_for(b"FLOOD-2-DONE", 240, after=len(net.serial.data) - 4000, what="the end of the UDP flood")
    assert net.processes.vcpu.poll() is None and net.processes.devices.poll() is None
    test_guest_downloads_from_the_host_intact(net)
