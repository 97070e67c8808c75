"""The host-resolver DNS responder: answers from the host's resolver in whole Ethernet frames with
valid checksums, NXDOMAIN and empty answers where due, None for other traffic, no raise on garbage;
and wired in front of a real slirp whose DNS proxy is off."""

import ipaddress
import random
import socket
import struct

from services.devices.nat.host_dns import HostResolverDns, resolve_with_host
from services.devices.nat.slirp import NatConfig, Slirp

GUEST_MAC = bytes.fromhex("525400123456")
NAT_MAC = bytes.fromhex("52550a000203")
A, PTR, MX, AAAA = 1, 12, 15, 28


def ip(text):
    return ipaddress.ip_address(text).packed


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp_frame(payload, dst="10.0.2.3", dport=53, sport=40000, proto=17, udp_checksum=True,
                   fragment=0):
    length = 8 + len(payload)
    pseudo = ip("10.0.2.15") + ip(dst) + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    if udp_checksum:
        udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 9, fragment, 64, proto, 0,
                         ip("10.0.2.15"), ip(dst))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return NAT_MAC + GUEST_MAC + b"\x08\x00" + header + udp


def query(name, qtype=A, ident=0xBEEF, flags=0x0100, qdcount=1):
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label) + b"\0"
    return struct.pack("!HHHHHH", ident, flags, qdcount, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def parse_reply(frame, query_frame):
    """Checks the Ethernet/IP/UDP framing and checksums; returns (dns header, question end, answers)."""
    assert frame[:6] == GUEST_MAC and frame[6:12] == NAT_MAC and frame[12:14] == b"\x08\x00"
    header = frame[14:34]
    assert checksum(header) == 0, "bad IP header checksum"
    total = struct.unpack_from("!H", header, 2)[0]
    assert total == len(frame) - 14 and header[9] == 17
    assert header[12:16] == ip("10.0.2.3") and header[16:20] == ip("10.0.2.15")
    udp = frame[34:]
    sport, dport, length, _ = struct.unpack_from("!HHHH", udp)
    assert (sport, dport, length) == (53, struct.unpack_from("!H", query_frame, 34)[0], len(udp))
    pseudo = header[12:20] + struct.pack("!BBH", 0, 17, length)
    assert checksum(pseudo + udp) == 0, "bad UDP checksum"
    dns = udp[8:]
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", dns)
    offset = 12
    if qd:
        while dns[offset]:
            offset += dns[offset] + 1
        offset += 5
    answers = []
    for _ in range(an):
        pointer, rtype, rclass, ttl, rdlength = struct.unpack_from("!HHHIH", dns, offset)
        assert pointer == 0xC00C and rclass == 1
        offset += 12
        answers.append((rtype, ttl, dns[offset:offset + rdlength]))
        offset += rdlength
    assert offset == len(dns)
    return {"id": ident, "flags": flags, "rcode": flags & 0xF, "qd": qd}, dns[12:], answers


def hosts_file(table):
    """A resolver over a fixed table {name: [addresses]}, rejecting every other name like getaddrinfo."""
    def resolve(name, family):
        found = [a for a in table.get(name.lower(), [])
                 if family == socket.AF_UNSPEC or (":" in a) == (family == socket.AF_INET6)]
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return found
    return resolve


DNS = HostResolverDns("10.0.2.3", hosts_file({"localhost": ["127.0.0.1", "::1"], "v4only": ["10.9.8.7"]}))


def ask(name, qtype=A, responder=DNS, **kwargs):
    frame = ipv4_udp_frame(query(name, qtype, **kwargs))
    reply = responder.answer(frame)
    assert reply is not None
    return parse_reply(reply, frame)


def test_a_query_for_localhost():
    header, body, answers = ask("localhost")
    assert header["id"] == 0xBEEF and header["rcode"] == 0 and header["qd"] == 1
    assert header["flags"] & 0x8000 and header["flags"] & 0x0100 and header["flags"] & 0x0080   # QR RD RA
    assert body.startswith(b"\x09localhost\x00\x00\x01\x00\x01")
    assert answers == [(A, 60, ip("127.0.0.1"))]


def test_aaaa_query_for_localhost():
    assert ask("localhost", AAAA)[2] == [(AAAA, 60, ip("::1"))]


def test_a_query_through_the_hosts_real_resolver():
    # getaddrinfo reads /etc/hosts: this needs no upstream DNS
    assert "127.0.0.1" in resolve_with_host("localhost", socket.AF_INET)
    _, _, answers = ask("localhost", responder=HostResolverDns("10.0.2.3"))
    assert (A, 60, ip("127.0.0.1")) in answers


def test_names_keep_their_case_and_may_end_in_a_dot():
    header, body, answers = ask("LocalHost.")
    assert body.startswith(b"\x09LocalHost\x00") and answers == [(A, 60, ip("127.0.0.1"))]


def test_unknown_name_is_nxdomain():
    header, _, answers = ask("no-such-host.example")
    assert header["rcode"] == 3 and answers == []


def test_name_with_addresses_of_the_other_family_only_is_no_data():
    header, _, answers = ask("v4only", AAAA)
    assert header["rcode"] == 0 and answers == []


def test_other_query_types():
    assert ask("1.0.0.127.in-addr.arpa", PTR)[0]["rcode"] == 3
    header, _, answers = ask("localhost", MX)
    assert header["rcode"] == 0 and answers == []
    assert ask("localhost", flags=0x2900)[0]["rcode"] == 4          # opcode UPDATE: not implemented


def test_many_addresses_are_truncated_to_512_bytes():
    many = [f"10.1.{i // 256}.{i % 256}" for i in range(100)]
    header, _, answers = ask("big", responder=HostResolverDns("10.0.2.3", hosts_file({"big": many})))
    assert header["flags"] & 0x0200 and 0 < len(answers) < 100                 # TC set
    assert [a[2] for a in answers] == [ip(x) for x in many[:len(answers)]]


def test_query_without_udp_checksum_and_with_ethernet_padding():
    frame = ipv4_udp_frame(query("localhost"), udp_checksum=False)
    reply = DNS.answer(frame + b"\0" * 30)
    assert parse_reply(reply, frame)[2] == [(A, 60, ip("127.0.0.1"))]


def test_frames_that_are_not_dns_queries_to_the_name_server_pass():
    q = query("localhost")
    arp = NAT_MAC + GUEST_MAC + b"\x08\x06" + bytes(28)
    response = query("localhost", flags=0x8180)
    bad_ip = bytearray(ipv4_udp_frame(q))
    bad_ip[24] ^= 0xFF                                                       # IP header checksum
    bad_udp = bytearray(ipv4_udp_frame(q))
    bad_udp[-1] ^= 0xFF                                                      # UDP payload vs checksum
    for frame in (arp, ipv4_udp_frame(q, dport=54), ipv4_udp_frame(q, dst="10.0.2.2"),
                  ipv4_udp_frame(q, proto=6), ipv4_udp_frame(response), ipv4_udp_frame(q, fragment=0x2000),
                  bytes(bad_ip), bytes(bad_udp), b"", b"\x08\x00" * 30):
        assert DNS.answer(frame) is None


def test_malformed_queries_get_formerr_or_nothing():
    assert ask("localhost", qdcount=2)[0]["rcode"] == 1
    header_only = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
    pointer = header_only + b"\xc0\x0c\x00\x01\x00\x01"
    long_label = header_only + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"
    no_type = header_only + b"\x09localhost\x00\x00"
    for payload in (header_only, pointer, long_label, no_type):
        frame = ipv4_udp_frame(payload)
        header, _, answers = parse_reply(DNS.answer(frame), frame)
        assert header["rcode"] == 1 and answers == []
    binary = ipv4_udp_frame(header_only + b"\x03a\x00b\x00\x00\x01\x00\x01")
    assert parse_reply(DNS.answer(binary), binary)[0]["rcode"] == 3       # no host has that name


def test_garbage_never_raises():
    rng = random.Random(53)
    good = query("localhost")
    for _ in range(3000):
        if rng.random() < 0.5:
            payload = rng.randbytes(rng.randrange(0, 300))
        else:
            payload = bytearray(good)
            for _ in range(rng.randrange(1, 6)):
                payload[rng.randrange(len(payload))] = rng.randrange(256)
            payload = bytes(payload[:rng.randrange(len(payload) + 1)])
        frame = ipv4_udp_frame(payload)
        reply = DNS.answer(frame)
        if reply is not None:
            parse_reply(reply, frame)
        truncated = frame[:rng.randrange(len(frame) + 1)]
        DNS.answer(truncated)


def test_wired_before_slirp_with_its_dns_proxy_off():
    # How the devices process uses it: the responder sees each guest frame first, slirp the rest.
    to_guest = []
    with Slirp(NatConfig(dns=False), to_guest.append) as nat:
        def from_guest(frame):
            reply = DNS.answer(frame)
            if reply is None:
                nat.input(frame)
            else:
                to_guest.append(reply)

        who_has = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, GUEST_MAC, ip("10.0.2.15"), bytes(6),
                              ip("10.0.2.3"))
        from_guest(b"\xff" * 6 + GUEST_MAC + b"\x08\x06" + who_has)
        assert len(to_guest) == 1 and to_guest[0][28:32] == ip("10.0.2.3")   # slirp answers the ARP
        frame = ipv4_udp_frame(query("localhost"))
        from_guest(frame)
        assert parse_reply(to_guest[1], frame)[2] == [(A, 60, ip("127.0.0.1"))]
