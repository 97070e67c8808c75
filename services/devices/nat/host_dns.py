"""VirtualBox's --natdnshostresolver: the NAT name server answers from the host's own resolver.

Sans-I/O: DNS query frames in, reply frames out, so /etc/hosts works without upstream DNS. Run slirp
with NatConfig(dns=False) and offer it each guest frame after answer() returned None for it."""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
from typing import Callable

DNS_PORT = 53
ANSWER_TTL = 60
_MAX_UDP_DNS = 512                      # no EDNS: plain DNS over UDP stays within 512 bytes

TYPE_A, TYPE_PTR, TYPE_AAAA = 1, 12, 28
CLASS_IN, CLASS_ANY = 1, 255
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4

_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_DNS_HEADER = struct.Struct("!HHHHHH")
_ETHERTYPE_IPV4 = 0x0800
_UDP_PROTOCOL = 17

Resolver = Callable[[str, int], list[str]]


def resolve_with_host(name: str, family: int) -> list[str]:
    """The host's addresses for name in family (AF_UNSPEC: any); OSError when it does not resolve.
    getaddrinfo follows nsswitch.conf, so /etc/hosts answers even with no upstream network."""
    infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HostResolverDns:
    """Answers DNS queries sent to nameserver_ip:53. Lookups block the caller (getaddrinfo has no
    asynchronous form); answers from /etc/hosts are quick, and a guest's resolver retries anyway."""

    def __init__(self, nameserver_ip: str, resolve: Resolver = resolve_with_host) -> None:
        self._nameserver = ipaddress.IPv4Address(nameserver_ip).packed
        self._resolve = resolve
        self._ip_ids = itertools.count(1)

    def answer(self, frame: bytes) -> bytes | None:
        """The reply frame to a DNS query addressed to the name server; None for any other frame."""
        # Cheap checks first: every guest frame passes through here.
        if (len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != _UDP_PROTOCOL
                or frame[30:34] != self._nameserver):
            return None
        query = _udp_payload(frame)
        if query is None:
            return None
        src_ip, src_port, payload = query
        reply = self._dns_reply(payload)
        if reply is None:
            return None
        dst_mac, src_mac, _ = _ETH.unpack_from(frame)
        return _ETH.pack(src_mac, dst_mac, _ETHERTYPE_IPV4) + _ipv4_udp(
            self._nameserver, src_ip, DNS_PORT, src_port, reply, next(self._ip_ids) & 0xFFFF)

    def _dns_reply(self, message: bytes) -> bytes | None:
        if len(message) < _DNS_HEADER.size:
            return None
        ident, flags, qdcount, _, _, _ = _DNS_HEADER.unpack_from(message)
        if flags & 0x8000:
            return None                       # a response, not a query: nothing to answer
        opcode = (flags >> 11) & 0xF
        if opcode != 0:
            return _header(ident, flags, NOTIMP)
        if qdcount != 1:
            return _header(ident, flags, FORMERR)
        question = _question(message, _DNS_HEADER.size)
        if question is None:
            return _header(ident, flags, FORMERR)
        labels, qtype, qclass, end = question
        raw_question = message[_DNS_HEADER.size:end]
        if qclass not in (CLASS_IN, CLASS_ANY):
            return _header(ident, flags, NOTIMP, raw_question)
        rcode, addresses = self._lookup(labels, qtype)
        return _response(ident, flags, rcode, raw_question, qtype, addresses)

    def _lookup(self, labels: list[bytes], qtype: int) -> tuple[int, list[bytes]]:
        if qtype == TYPE_PTR:
            return NXDOMAIN, []
        name = _hostname(labels)
        if name is None:
            return NXDOMAIN, []
        if not name:
            return NOERROR, []                # the root has no addresses
        if qtype not in (TYPE_A, TYPE_AAAA):
            return NOERROR, []
        family = socket.AF_INET if qtype == TYPE_A else socket.AF_INET6
        found = self._addresses(name, family)
        if found:
            return NOERROR, found
        # A name with addresses of the other family exists: "no data", not "no such name", or the
        # guest would stop trying the family that does resolve.
        return (NOERROR if self._addresses(name, socket.AF_UNSPEC) else NXDOMAIN), []

    def _addresses(self, name: str, family: int) -> list[bytes]:
        try:
            found = self._resolve(name, family)
        except (OSError, UnicodeError, ValueError):
            return []
        packed = []
        for text in found:
            try:
                address = ipaddress.ip_address(str(text).split("%", 1)[0])   # drop an IPv6 zone
            except ValueError:
                continue
            if family == socket.AF_UNSPEC or (address.version == 4) == (family == socket.AF_INET):
                packed.append(address.packed)
        return list(dict.fromkeys(packed))


def _udp_payload(frame: bytes) -> tuple[bytes, int, bytes] | None:
    """(source IP, source port, payload) of a whole IPv4/UDP datagram to port 53, else None."""
    version_ihl, _, total, _, fragment, _, _, _, src_ip, dst_ip = _IPV4.unpack_from(frame, 14)
    ihl = (version_ihl & 0xF) * 4
    if version_ihl >> 4 != 4 or ihl < 20 or fragment & 0x3FFF:
        return None                           # fragments go to slirp, which reassembles them
    if total < ihl + _UDP.size or 14 + total > len(frame):
        return None
    packet = frame[14:14 + total]
    if _checksum(packet[:ihl]) != 0:
        return None
    src_port, dst_port, length, checksum = _UDP.unpack_from(packet, ihl)
    if dst_port != DNS_PORT or length < _UDP.size or ihl + length > total:
        return None
    datagram = packet[ihl:ihl + length]
    if checksum and _checksum(_pseudo_header(src_ip, dst_ip, length) + datagram) != 0:
        return None
    return src_ip, src_port, datagram[_UDP.size:]


def _question(message: bytes, offset: int) -> tuple[list[bytes], int, int, int] | None:
    """(labels, type, class, end offset) of an uncompressed question; None when malformed."""
    labels, total = [], 0
    while True:
        if offset >= len(message):
            return None
        length = message[offset]
        offset += 1
        if length == 0:
            break
        if length > 63:                       # a compression pointer or a reserved label type
            return None
        label = message[offset:offset + length]
        total += length + 1
        if len(label) < length or total > 255:
            return None
        labels.append(label)
        offset += length
    if offset + 4 > len(message):
        return None
    qtype, qclass = struct.unpack_from("!HH", message, offset)
    return labels, qtype, qclass, offset + 4


def _hostname(labels: list[bytes]) -> str | None:
    """The name to give the resolver; None when no host can have it (dots or binary in a label)."""
    names = []
    for label in labels:
        if b"." in label or not all(0x21 <= byte < 0x7F for byte in label):
            return None
        names.append(label.decode("ascii"))
    return ".".join(names)


def _header(ident: int, query_flags: int, rcode: int, question: bytes = b"") -> bytes:
    # QR and RA set; the opcode and RD echo the query.
    flags = 0x8000 | (query_flags & 0x7900) | 0x0080 | rcode
    return _DNS_HEADER.pack(ident, flags, 1 if question else 0, 0, 0, 0) + question


def _response(ident: int, query_flags: int, rcode: int, question: bytes, qtype: int,
              addresses: list[bytes]) -> bytes:
    records = []
    size = _DNS_HEADER.size + len(question)
    truncated = False
    for address in addresses:
        # The owner name points at the question's name, right after the header (offset 12).
        record = struct.pack("!HHHIH", 0xC00C, qtype, CLASS_IN, ANSWER_TTL, len(address)) + address
        if size + len(record) > _MAX_UDP_DNS:
            truncated = True
            break
        records.append(record)
        size += len(record)
    flags = 0x8000 | (query_flags & 0x7900) | 0x0080 | (0x0200 if truncated else 0) | rcode
    return _DNS_HEADER.pack(ident, flags, 1, len(records), 0, 0) + question + b"".join(records)


def _ipv4_udp(src_ip: bytes, dst_ip: bytes, src_port: int, dst_port: int, payload: bytes,
              ip_id: int) -> bytes:
    length = _UDP.size + len(payload)
    udp = _UDP.pack(src_port, dst_port, length, 0) + payload
    checksum = _checksum(_pseudo_header(src_ip, dst_ip, length) + udp) or 0xFFFF
    udp = udp[:6] + checksum.to_bytes(2, "big") + udp[8:]
    header = _IPV4.pack(0x45, 0, 20 + length, ip_id, 0, 64, _UDP_PROTOCOL, 0, src_ip, dst_ip)
    header = header[:10] + _checksum(header).to_bytes(2, "big") + header[12:]
    return header + udp


def _pseudo_header(src_ip: bytes, dst_ip: bytes, udp_length: int) -> bytes:
    return src_ip + dst_ip + struct.pack("!BBH", 0, _UDP_PROTOCOL, udp_length)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071); 0 over data that already holds a correct one."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
