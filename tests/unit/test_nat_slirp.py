"""The libslirp binding against the real libslirp0: DHCP, ARP, ping, host forwards, UDP out, saved
state, isolation between instances, and garbage frames that must not crash the process."""

import ctypes
import ipaddress
import logging
import random
import select
import socket
import struct
import time

import pytest

from services.devices.nat.slirp import (
    NatConfig,
    Slirp,
    SlirpError,
    _SlirpCb,
    _SlirpConfig,
)

GUEST_MAC = bytes.fromhex("525400123456")
OTHER_MAC = bytes.fromhex("525400abcdef")
BROADCAST = b"\xff" * 6
ETH_IPV4, ETH_ARP = 0x0800, 0x0806


# -- frames ---------------------------------------------------------------------------------------

def ip(text):
    return ipaddress.IPv4Address(text).packed


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def eth(dst, src, ethertype, payload):
    return dst + src + struct.pack("!H", ethertype) + payload


def ipv4(src, dst, proto, payload):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, ip(src), ip(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def udp(src, dst, sport, dport, payload):
    length = 8 + len(payload)
    pseudo = ip(src) + ip(dst) + struct.pack("!BBH", 0, 17, length)
    sum_ = checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, length, sum_) + payload)


def arp_request(sender_mac, sender_ip, target_ip):
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_IPV4, 6, 4, 1, sender_mac, ip(sender_ip), b"\0" * 6,
                       ip(target_ip))
    return eth(BROADCAST, sender_mac, ETH_ARP, body)


def ping(src_mac, src, dst, ident=0x1234, seq=1):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"headbox-ping"
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return eth(BROADCAST, src_mac, ETH_IPV4, ipv4(src, dst, 1, body))


def dhcp(mac, message_type, xid=0x1020304, requested=None, server=None):
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4,
                        b"\0" * 4, b"\0" * 4, mac, b"", b"")
    options = bytes([53, 1, message_type])
    if requested:
        options += bytes([50, 4]) + ip(requested)
    if server:
        options += bytes([54, 4]) + ip(server)
    payload = bootp + b"\x63\x82\x53\x63" + options + b"\xff"
    return eth(BROADCAST, mac, ETH_IPV4, udp("0.0.0.0", "255.255.255.255", 68, 67, payload))


def parse(frame):
    """A dict describing an Ethernet frame: ARP, or IPv4 with its UDP/ICMP/TCP header fields."""
    dst, src, ethertype = struct.unpack_from("!6s6sH", frame)
    out = {"dst_mac": dst, "src_mac": src, "type": ethertype}
    if ethertype == ETH_ARP:
        op, sha, spa, tha, tpa = struct.unpack_from("!6xH6s4s6s4s", frame, 14)
        out.update(op=op, sha=sha, spa=str(ipaddress.IPv4Address(spa)), tpa=str(ipaddress.IPv4Address(tpa)))
    elif ethertype == ETH_IPV4:
        ihl = (frame[14] & 0xF) * 4
        proto = frame[23]
        out.update(proto=proto, src=str(ipaddress.IPv4Address(frame[26:30])),
                   dst=str(ipaddress.IPv4Address(frame[30:34])))
        body = frame[14 + ihl:]
        if proto == 17:
            out.update(sport=struct.unpack_from("!H", body)[0], dport=struct.unpack_from("!H", body, 2)[0],
                       payload=body[8:])
        elif proto == 1:
            out.update(icmp_type=body[0], icmp_payload=body[4:])
        elif proto == 6:
            out.update(sport=struct.unpack_from("!H", body)[0], dport=struct.unpack_from("!H", body, 2)[0],
                       tcp_flags=body[13])
    return out


def dhcp_reply(frame):
    """(yiaddr, options by code) of a BOOTP reply."""
    payload = parse(frame)["payload"]
    yiaddr = str(ipaddress.IPv4Address(payload[16:20]))
    options, i = {}, 240
    while i < len(payload) and payload[i] != 255:
        if payload[i] == 0:
            i += 1
            continue
        code, length = payload[i], payload[i + 1]
        options[code] = payload[i + 2:i + 2 + length]
        i += 2 + length
    return yiaddr, options


# -- harness --------------------------------------------------------------------------------------

@pytest.fixture
def nat():
    frames = []
    with Slirp(NatConfig(), frames.append) as instance:
        instance.frames = frames
        yield instance


def pump(nat, until, seconds=3.0):
    """Run the owner's loop (poll the fds slirp names, then dispatch) until until() holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fds, timeout = nat.poll_fds()
        poller = select.poll()
        for fd, events in fds:
            poller.register(fd, events)
        nat.dispatch(dict(poller.poll(min(timeout, 50))))
        if until():
            return True
    return False


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lease(nat, mac, xid=7):
    nat.frames.clear()
    nat.input(dhcp(mac, 1, xid))
    offers = [f for f in nat.frames if parse(f).get("sport") == 67]
    assert offers, "no DHCPOFFER"
    return dhcp_reply(offers[-1])


# -- tests ----------------------------------------------------------------------------------------

def test_ctypes_layouts_match_the_4_7_0_header():
    # offsetof()/sizeof() as gcc computes them for libslirp.h of 4.7.0 on x86-64
    assert ctypes.sizeof(_SlirpConfig) == 184 and ctypes.sizeof(_SlirpCb) == 88
    fields = ("vnetwork", "in6_enabled", "vprefix_addr6", "vhostname", "vdhcp_start", "vdomainname",
              "if_mtu", "disable_dns")
    assert [getattr(_SlirpConfig, f).offset for f in fields] == [12, 24, 28, 64, 96, 128, 136, 176]
    assert _SlirpCb.notify.offset == 64


def test_dhcp_discover_offer_request_ack(nat):
    yiaddr, options = lease(nat, GUEST_MAC)
    assert yiaddr == "10.0.2.15"
    assert options[53] == b"\x02"                                   # DHCPOFFER
    assert options[54] == ip("10.0.2.2") and options[3] == ip("10.0.2.2") and options[6] == ip("10.0.2.3")
    assert options[1] == ip("255.255.255.0")
    nat.frames.clear()
    nat.input(dhcp(GUEST_MAC, 3, requested="10.0.2.15", server="10.0.2.2"))
    acks = [dhcp_reply(f) for f in nat.frames if parse(f).get("sport") == 67]
    assert acks and acks[-1][0] == "10.0.2.15" and acks[-1][1][53] == b"\x05"   # DHCPACK


def test_arp_reply_and_ping_to_the_host_address(nat):
    nat.input(arp_request(GUEST_MAC, "10.0.2.15", "10.0.2.2"))
    arp = [parse(f) for f in nat.frames if parse(f)["type"] == ETH_ARP]
    assert arp and arp[0]["op"] == 2 and arp[0]["spa"] == "10.0.2.2" and arp[0]["tpa"] == "10.0.2.15"
    assert arp[0]["dst_mac"] == GUEST_MAC
    nat.frames.clear()
    nat.input(ping(GUEST_MAC, "10.0.2.15", "10.0.2.2"))
    pump(nat, lambda: nat.frames, seconds=1)
    replies = [parse(f) for f in nat.frames if parse(f).get("proto") == 1]
    assert replies and replies[0]["icmp_type"] == 0 and replies[0]["src"] == "10.0.2.2"
    assert replies[0]["dst"] == "10.0.2.15" and replies[0]["icmp_payload"].endswith(b"headbox-ping")


def test_tcp_host_forward_reaches_the_guest(nat):
    nat.input(arp_request(GUEST_MAC, "10.0.2.15", "10.0.2.2"))   # slirp learns the guest's MAC
    port = free_port()
    nat.add_forward(False, "127.0.0.1", port, "", 80)
    nat.frames.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        def syn():
            return any(p.get("proto") == 6 and p["dport"] == 80 and p["dst"] == "10.0.2.15"
                       and p["tcp_flags"] & 0x02 for p in map(parse, nat.frames))
        assert pump(nat, syn), "no TCP SYN toward the guest"
    with pytest.raises(SlirpError, match=f"host port {port} \\(tcp, 127.0.0.1\\) is in use"):
        nat.add_forward(False, "127.0.0.1", port, "", 80)
    assert nat.remove_forward(False, "127.0.0.1", port) is True
    assert nat.remove_forward(False, "127.0.0.1", port) is False


def test_forward_to_an_unknown_guest_asks_arp_first(nat):
    port = free_port()
    nat.add_forward(False, "127.0.0.1", port, "", 22)
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        def who_has_guest():
            return any(p["type"] == ETH_ARP and p["op"] == 1 and p["tpa"] == "10.0.2.15"
                       for p in map(parse, nat.frames))
        assert pump(nat, who_has_guest)


def test_udp_forward_on_all_addresses_and_bad_forwards(nat):
    port = free_port(socket.SOCK_DGRAM)
    nat.add_forward(True, "", port, "10.0.2.15", 53)
    with pytest.raises(SlirpError, match="udp, 0.0.0.0"):
        nat.add_forward(True, "0.0.0.0", port, "", 53)
    assert nat.remove_forward(True, "0.0.0.0", port) is True
    with pytest.raises(SlirpError, match="outside the NAT network"):
        nat.add_forward(False, "127.0.0.1", free_port(), "192.168.1.5", 80)
    with pytest.raises(SlirpError, match="not an IPv4 address"):
        nat.add_forward(False, "localhost", free_port(), "", 80)
    with pytest.raises(SlirpError, match="not a port number"):
        nat.add_forward(False, "127.0.0.1", 70000, "", 80)


def test_udp_from_the_guest_to_the_host_address_reaches_host_loopback(nat):
    nat.input(arp_request(GUEST_MAC, "10.0.2.15", "10.0.2.2"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as host:
        host.bind(("127.0.0.1", 0))
        host.settimeout(2)
        port = host.getsockname()[1]
        nat.frames.clear()
        datagram = udp("10.0.2.15", "10.0.2.2", 5555, port, b"hello host")
        nat.input(eth(BROADCAST, GUEST_MAC, ETH_IPV4, datagram))
        data, peer = host.recvfrom(100)
        assert data == b"hello host"
        host.sendto(b"hello guest", peer)                          # and the answer comes back
        def answered():
            return any(p.get("payload") == b"hello guest" and p["src"] == "10.0.2.2" and p["sport"] == port
                       and p["dst"] == "10.0.2.15" and p["dport"] == 5555 for p in map(parse, nat.frames))
        assert pump(nat, answered)


def test_saved_state_round_trips_into_a_fresh_instance(nat):
    assert lease(nat, GUEST_MAC)[0] == "10.0.2.15"
    state = nat.save_state()
    frames = []
    with Slirp(NatConfig(), frames.append) as fresh:
        fresh.frames = frames
        fresh.load_state(state)
        assert lease(fresh, OTHER_MAC)[0] == "10.0.2.16"           # .15 stays with the first guest
        assert lease(fresh, GUEST_MAC)[0] == "10.0.2.15"


@pytest.mark.parametrize("blob", [
    b"", b"\0" * 3, random.Random(1).randbytes(4000), b"SLRP\0\0\0\x63" + b"\0" * 131,
    b"SLRP\0\0\0\x04", b"SLRP\0\0\0\x04" + b"\0" * 20, b"SLRP\0\0\0\x04" + b"\0" * 200,
    b"SLRP\0\0\0\x04\x2a" + b"\xff" * 500,
])
def test_loading_garbage_state_raises_and_the_nat_keeps_working(nat, blob):
    with pytest.raises(SlirpError):
        nat.load_state(blob)
    nat.input(arp_request(GUEST_MAC, "10.0.2.15", "10.0.2.2"))
    assert any(parse(f)["type"] == ETH_ARP for f in nat.frames)


def test_two_instances_are_isolated():
    first, second = [], []
    other_network = NatConfig.from_natnet("10.0.3.0/24")
    with Slirp(NatConfig(), first.append) as a, Slirp(other_network, second.append) as b:
        a.input(arp_request(GUEST_MAC, "10.0.2.15", "10.0.2.2"))
        assert first and not second
        b.input(arp_request(GUEST_MAC, "10.0.3.15", "10.0.2.2"))   # not b's network: no answer
        assert not second
        b.input(arp_request(GUEST_MAC, "10.0.3.15", "10.0.3.2"))
        assert len(first) == 1 and parse(second[0])["spa"] == "10.0.3.2"
        b.frames = second
        assert lease(b, GUEST_MAC)[0] == "10.0.3.15"              # the lease is b's, a saw nothing
        assert len(first) == 1


def test_garbage_frames_never_crash(nat):
    rng = random.Random(1234)
    frames = [b"", b"\x00", b"\xff" * 13, rng.randbytes(2000)]
    for ethertype in (ETH_IPV4, ETH_ARP, 0x86DD, 0x88F8, 0x8100):
        for size in (0, 1, 10, 19, 20, 28, 40, 60, 600, 1500):
            frames.append(eth(BROADCAST, GUEST_MAC, ethertype, rng.randbytes(size)))
    good = ping(GUEST_MAC, "10.0.2.15", "10.0.2.2")
    frames += [good[:14 + n] for n in range(0, 28)]               # truncated IP and ICMP headers
    lying = bytearray(good)
    lying[16:18] = b"\xff\xff"                                    # total length beyond the frame
    frames.append(bytes(lying))
    for _ in range(300):
        base = bytearray(good)
        for _ in range(4):
            base[rng.randrange(14, len(base))] = rng.randrange(256)
        frames.append(bytes(base))
    for frame in frames:
        nat.input(frame)
    pump(nat, lambda: False, seconds=0.2)
    nat.frames.clear()
    nat.input(arp_request(GUEST_MAC, "10.0.2.15", "10.0.2.2"))
    assert nat.frames


def test_exceptions_in_callbacks_stay_in_python(caplog):
    def broken(frame):
        raise ValueError("guest queue gone")
    with Slirp(NatConfig(), broken) as nat, caplog.at_level(logging.ERROR, "headbox.devices.nat"):
        nat.input(arp_request(GUEST_MAC, "10.0.2.15", "10.0.2.2"))
    assert "delivering a frame to the guest failed" in caplog.text


def test_timers_libslirp_sets_bound_the_poll_timeout_and_fire_in_dispatch():
    # libslirp 4.7.0 only arms timers for IPv6 router advertisements; drive the callbacks as it would.
    now = [5_000_000_000]
    fired = []
    with Slirp(NatConfig(), lambda frame: None, clock_ns=lambda: now[0]) as nat:
        on_expiry = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(fired.append)
        handle = nat._callbacks.timer_new(ctypes.cast(on_expiry, ctypes.c_void_p).value, 42, None)
        nat._callbacks.timer_mod(handle, 5_000 + 300, None)
        assert nat.poll_fds()[1] == 300
        now[0] += 299_000_000
        nat.dispatch(None)
        assert fired == []
        now[0] += 1_000_000
        nat.dispatch({})
        assert fired == [42]
        assert nat.poll_fds()[1] == 1000                          # fired timers are disarmed
        nat._callbacks.timer_free(handle, None)


def test_natnet_addressing_and_config_errors():
    config = NatConfig.from_natnet("10.0.3.0/24", dns=False)
    assert (config.network, config.prefix, config.host, config.nameserver, config.dhcp_start) == \
        ("10.0.3.0", 24, "10.0.3.2", "10.0.3.3", "10.0.3.15")
    assert not config.dns
    for bad in ("10.0.3.0/30", "banana", "10.0.300.0/24"):
        with pytest.raises(SlirpError, match="--natnet"):
            NatConfig.from_natnet(bad)
    with pytest.raises(SlirpError, match="not a host address"):
        NatConfig(dhcp_start="10.0.9.15")
    with pytest.raises(SlirpError, match="MTU"):
        NatConfig(mtu=10)


def test_closed_instance_is_inert_and_close_is_idempotent():
    nat = Slirp(NatConfig(), lambda frame: None)
    nat.close()
    nat.close()
    nat.input(b"\0" * 60)
    nat.dispatch(None)
    assert nat.poll_fds() == ([], 1000)
    with pytest.raises(SlirpError, match="closed"):
        nat.add_forward(False, "127.0.0.1", free_port(), "", 80)


def test_tftp_prefix_and_boot_file_as_virtualbox_offers_them(tmp_path):
    """--nattftpprefix is the folder the NAT's TFTP server (at the host address) reads from,
    --nattftpfile the boot file its DHCP offers."""
    (tmp_path / "pxelinux.0").write_bytes(b"boot-image" * 100)
    frames = []
    with Slirp(NatConfig(tftp_path=str(tmp_path), bootfile="pxelinux.0"), frames.append) as nat:
        nat.input(dhcp(GUEST_MAC, 1))
        offer = parse([f for f in frames if parse(f).get("sport") == 67][-1])["payload"]
        assert offer[108:236].rstrip(b"\0") == b"pxelinux.0"       # BOOTP's file field
        frames.clear()
        request = struct.pack("!H", 1) + b"pxelinux.0\0octet\0"
        nat.input(eth(BROADCAST, GUEST_MAC, ETH_IPV4, udp("10.0.2.15", "10.0.2.2", 2000, 69, request)))
        data = [parse(f) for f in frames if parse(f).get("sport") == 69]
        assert data and data[0]["payload"][:4] == struct.pack("!HH", 3, 1)   # DATA, block 1
        assert data[0]["payload"][4:] == (b"boot-image" * 100)[:512]
