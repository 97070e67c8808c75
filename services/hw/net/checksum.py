"""The Internet checksum (RFC 1071) and the offloads a card performs with it: header and
transport checksums inserted at driver-given offsets, and TCP segmentation (TSO)."""

from __future__ import annotations

from dataclasses import dataclass

TCP_FIN, TCP_PSH = 0x01, 0x08


def ones_sum(data) -> int:
    """The one's-complement sum of `data` as 16-bit big-endian words (odd length padded with 0).
    2**16 = 1 (mod 0xFFFF), so the sum of the words is the number itself mod 0xFFFF: one C-level
    big-integer operation instead of a loop over words."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def fold(value: int) -> int:
    """Reduce an integer sum to 16 bits in one's-complement arithmetic."""
    while value >> 16:
        value = (value & 0xFFFF) + (value >> 16)
    return value


def internet_checksum(data) -> int:
    """The checksum to store: never 0, which suits UDP (0 there means "no checksum")."""
    return ~ones_sum(data) & 0xFFFF


def insert_checksum(frame: bytearray, start: int, offset: int, end: int = 0) -> None:
    """Sum frame[start:end] (end 0 = to the frame's end) and store the checksum at `offset`, as
    a card does: whatever the field holds (the driver's pseudo-header sum) is part of the sum."""
    stop = end + 1 if end else len(frame)
    if not start < stop <= len(frame) or not start <= offset <= len(frame) - 2:
        return                                   # offsets past the frame: the driver's mistake
    frame[offset:offset + 2] = internet_checksum(frame[start:stop]).to_bytes(2, "big")


@dataclass(frozen=True)
class Offload:
    """What the driver asked the card to do to one packet (from its context descriptor)."""
    ip_start: int = 0          # IPCSS: the IP header
    ip_offset: int = 0         # IPCSO: its checksum field
    ip_end: int = 0            # IPCSE: last byte summed, 0 = to the end
    l4_start: int = 0          # TUCSS: the TCP/UDP header
    l4_offset: int = 0         # TUCSO: its checksum field
    l4_end: int = 0
    ipv4: bool = True
    tcp: bool = True
    header_length: int = 0     # TSO: bytes repeated in every segment
    mss: int = 0               # TSO: payload bytes per segment


def apply_checksums(frame: bytearray, offload: Offload, ip: bool, l4: bool) -> None:
    if ip:
        insert_checksum(frame, offload.ip_start, offload.ip_offset, offload.ip_end)
    if l4:
        insert_checksum(frame, offload.l4_start, offload.l4_offset, offload.l4_end)


def segment(packet: bytes, offload: Offload, ip_checksum: bool, l4_checksum: bool) -> list[bytes]:
    """Cut a TSO packet into frames of at most `mss` payload bytes each, with the IP lengths and
    IDs, TCP sequence numbers, flags and checksums a card gives every segment. The driver put a
    pseudo-header sum without the length into the TCP/UDP checksum field; each segment adds its own."""
    header_length, mss = offload.header_length, offload.mss
    if mss <= 0 or not 0 < header_length <= len(packet) or offload.l4_start + 18 > header_length:
        return []
    header, payload = packet[:header_length], packet[header_length:]
    ip, l4 = offload.ip_start, offload.l4_start
    ip_id = int.from_bytes(header[ip + 4:ip + 6], "big") if offload.ipv4 else 0
    sequence = int.from_bytes(header[l4 + 4:l4 + 8], "big") if offload.tcp else 0
    pseudo = int.from_bytes(header[offload.l4_offset:offload.l4_offset + 2], "big")
    frames = []
    count = max(1, -(-len(payload) // mss))
    for index in range(count):
        chunk = payload[index * mss:(index + 1) * mss]
        frame = bytearray(header + chunk)
        if offload.ipv4:
            frame[ip + 2:ip + 4] = (len(frame) - ip).to_bytes(2, "big")
            frame[ip + 4:ip + 6] = ((ip_id + index) & 0xFFFF).to_bytes(2, "big")
        else:
            frame[ip + 4:ip + 6] = (len(frame) - ip - 40).to_bytes(2, "big")
        if offload.tcp:
            frame[l4 + 4:l4 + 8] = ((sequence + index * mss) & 0xFFFFFFFF).to_bytes(4, "big")
            if index < count - 1:
                frame[l4 + 13] &= ~(TCP_FIN | TCP_PSH) & 0xFF
        else:
            frame[l4 + 4:l4 + 6] = (len(frame) - l4).to_bytes(2, "big")
        if l4_checksum:
            frame[offload.l4_offset:offload.l4_offset + 2] = fold(pseudo + len(frame) - l4).to_bytes(2, "big")
        apply_checksums(frame, offload, ip_checksum, l4_checksum)
        frames.append(bytes(frame))
    return frames
