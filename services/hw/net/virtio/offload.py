"""The virtio_net_hdr before every frame the driver sends, and the work it hands the device: a
checksum completed from csum_start (VIRTIO_NET_F_CSUM) or a TCP packet cut into segments (HOST_TSO4/6)."""

from __future__ import annotations

import struct

from services.hw.net.checksum import Offload, fold, insert_checksum, ones_sum, segment

HDR_F_NEEDS_CSUM = 0x01
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_ECN = 0x00, 0x01, 0x03, 0x04, 0x80
_HEADER = struct.Struct("<BBHHHH")     # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
_VLAN_TYPES = (0x8100, 0x88A8)
IPPROTO_TCP = 6


class OffloadError(ValueError):
    """The header asks for something the device cannot do to this packet: it is dropped."""


def needs_work(header: bytes) -> bool:
    """Whether the header asks for anything (most frames of a driver without offloads do not)."""
    return bool(header[0] & HDR_F_NEEDS_CSUM or header[1])


def finish(header: bytes, frame: bytes) -> list[bytes]:
    """The frames to put on the wire for one driver packet."""
    flags, gso_type, _, gso_size, csum_start, csum_offset = _HEADER.unpack_from(header)
    gso = gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if not flags & HDR_F_NEEDS_CSUM:
            return [frame]
        packet = bytearray(frame)
        insert_checksum(packet, csum_start, csum_start + csum_offset)
        return [bytes(packet)]
    if gso not in (GSO_TCPV4, GSO_TCPV6):
        raise OffloadError(f"segmentation of GSO type {gso_type:#x}, which the device does not offer")
    # hdr_len is only a hint (Linux puts the skb's linear length there): the headers are parsed.
    return _segment_tcp(frame, gso == GSO_TCPV4, gso_size, csum_start if flags & HDR_F_NEEDS_CSUM else None)


def network_offset(frame: bytes) -> int:
    """Where the IP header starts: after the Ethernet header and any VLAN tags in the frame."""
    offset = 12
    while len(frame) >= offset + 6 and int.from_bytes(frame[offset:offset + 2], "big") in _VLAN_TYPES:
        offset += 4
    return offset + 2


def _segment_tcp(frame: bytes, ipv4: bool, mss: int, l4_hint: int | None) -> list[bytes]:
    ip = network_offset(frame)
    if ipv4:
        if len(frame) < ip + 20 or frame[ip] >> 4 != 4 or frame[ip + 9] != IPPROTO_TCP:
            raise OffloadError("a TCPv4 segmentation request for a packet that is not TCP over IPv4")
        ip_header = (frame[ip] & 0x0F) * 4
        l4 = ip + ip_header
    else:
        if len(frame) < ip + 40 or frame[ip] >> 4 != 6:
            raise OffloadError("a TCPv6 segmentation request for a packet that is not IPv6")
        ip_header = 40
        l4 = l4_hint if l4_hint is not None else ip + 40     # csum_start steps over extension headers
    if ip_header < 20 or l4 < ip + ip_header or len(frame) < l4 + 20:
        raise OffloadError("a segmentation request with truncated IP or TCP headers")
    header_length = l4 + (frame[l4 + 12] >> 4) * 4
    if not l4 + 20 <= header_length <= len(frame) or mss <= 0:
        raise OffloadError(f"a segmentation request with a bad TCP header or MSS {mss}")
    packet = bytearray(frame)
    # The driver's checksum field holds its own pseudo-header sum, which may include the whole
    # packet's length; segment() wants the sum without a length, and adds each segment's.
    addresses = packet[ip + 12:ip + 20] if ipv4 else packet[ip + 8:ip + 40]
    packet[l4 + 16:l4 + 18] = fold(ones_sum(addresses) + IPPROTO_TCP).to_bytes(2, "big")
    if ipv4:
        packet[ip + 10:ip + 12] = b"\0\0"          # summed afresh in every segment
    offload = Offload(ip_start=ip, ip_offset=ip + 10, ip_end=ip + ip_header - 1, l4_start=l4,
                      l4_offset=l4 + 16, ipv4=ipv4, tcp=True, header_length=header_length, mss=mss)
    frames = segment(bytes(packet), offload, ipv4, True)
    if not frames:
        raise OffloadError("a segmentation request checksum.segment() could not carry out")
    return frames
