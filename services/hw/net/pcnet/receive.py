"""The receive side: the address filter (station address, broadcast, the LADRF multicast hash,
promiscuous mode) and a frame written across as many of the driver's buffers as it needs."""

from __future__ import annotations

import zlib
from typing import Callable

from services.hw.net.pcnet.descriptors import RECEIVE, Ring, buffer_length
from services.hw.net.pcnet.ethernet import FCS_SIZE, MAX_FRAME, MIN_FRAME, VLAN_TYPE
from services.hw.net.pcnet.guest_errors import GuestErrors
from services.hw.net.pcnet.registers import (
    DESC_ERR,
    DRCVBC,
    DRCVPA,
    ENP,
    OWN,
    PROM,
    RX_BAM,
    RX_BUFF,
    RX_LAFM,
    RX_OFLO,
    RX_PAM,
    STP,
)

BROADCAST = b"\xff" * 6

# What storing a frame came to
STORED, NO_BUFFER, TRUNCATED = "stored", "no buffer", "truncated"
BUFFER_NOT_RAM, RING_NOT_RAM = "buffer not in RAM", "ring not in RAM"


def multicast_hash(destination: bytes) -> int:
    """The LADRF bit of a multicast address: the top six bits of its little-endian CRC-32 without
    the final inversion (pcnet32's ether_crc_le(6, addr) >> 26)."""
    return (zlib.crc32(destination) ^ 0xFFFFFFFF) >> 26


def address_match(destination: bytes, mode: int, station: bytes, multicast_filter: int) -> int | None:
    """The RMD1 match bits (PAM, BAM or LAFM; none in promiscuous mode) of a frame the filter lets
    in, None for a frame that is not for us."""
    if mode & PROM:
        return 0
    if destination[0] & 1:
        if destination == BROADCAST and not mode & DRCVBC:
            return RX_BAM
        if multicast_filter and multicast_filter >> multicast_hash(destination) & 1:
            return RX_LAFM
        return None
    if destination == station and not mode & DRCVPA:
        return RX_PAM
    return None


def as_received(frame: bytes, strip_padding: bool) -> bytes:
    """The bytes the chip stores: padded to 60 and followed by the FCS the wire carried (pcnet32
    takes MCNT - 4 as the length). CSR4's ASTRP_RCV strips a short 802.3 frame's padding and FCS;
    a frame already as long as Ethernet allows arrived with its FCS (VirtualBox's rule)."""
    length = len(frame)
    if strip_padding:
        length_field = frame[12] << 8 | frame[13]       # below 46, an 802.3 length, not an EtherType
        if length_field < 46:
            return frame[:14 + length_field]
    if length < MIN_FRAME:
        frame += bytes(MIN_FRAME - length)
    elif length > MAX_FRAME - FCS_SIZE and (length > MAX_FRAME or frame[12:14] != VLAN_TYPE):
        return frame
    return frame + zlib.crc32(frame).to_bytes(4, "little")


def claim_buffers(ring: Ring, memory, needed: int) -> list | None:
    """The descriptors a frame of `needed` bytes would fill, from the ring's current entry:
    [(index, descriptor)]. None while the driver has not handed over enough of them. If even the
    whole ring cannot hold the frame, all of it (the frame will be truncated, as on the wire).
    Raises ValueError when a descriptor is not in guest RAM."""
    chain, room, index = [], 0, ring.index
    while room < needed and len(chain) < ring.count:
        descriptor = ring.load(memory, index)
        if not descriptor.status & OWN:
            return None
        chain.append((index, descriptor))
        room += buffer_length(descriptor.count)
        index = ring.advance(index)
    return chain or None


def store_frame(ring: Ring, memory, data: bytes, match_bits: int, written: Callable[[int, int], None],
                errors: GuestErrors) -> str:
    """`data` (frame and FCS) into the driver's buffers; every descriptor used is handed back, the
    last with ENP and the message byte count (MCNT), or with BUFF/OFLO when the frame did not fit."""
    needed = len(data)
    try:
        chain = claim_buffers(ring, memory, needed)
    except ValueError:
        errors.report("rx-ring", "receive descriptor ring at %#x is not guest RAM", ring.base)
        return RING_NOT_RAM
    if chain is None:
        return NO_BUFFER
    offset, outcome, last = 0, STORED, len(chain) - 1
    for position, (index, descriptor) in enumerate(chain):
        length = buffer_length(descriptor.count)
        if offset < needed and length and outcome == STORED:
            piece = data if offset == 0 and length >= needed else data[offset:offset + length]
            try:
                memory.write(descriptor.buffer, piece)
                written(descriptor.buffer, len(piece))
            except ValueError:
                errors.report("rx-buffer", "receive buffer at %#x is not guest RAM", descriptor.buffer)
                outcome = BUFFER_NOT_RAM
        offset += length
        status, message_length = STP if position == 0 else 0, None
        if position == last:
            if outcome == STORED and offset < needed:
                errors.report("rx-size", "receive ring holds %d bytes, a %d-byte frame was cut", offset, needed)
                outcome = TRUNCATED
            if outcome == STORED:
                status |= ENP | match_bits
                message_length = needed
            else:
                status |= DESC_ERR | RX_BUFF | (RX_OFLO if outcome == TRUNCATED else 0)
        try:
            ring.store(memory, index, status, message_length, RECEIVE, written)
        except ValueError:
            errors.report("rx-ring", "receive descriptor at %#x is not guest RAM", ring.address(index))
    ring.index = ring.advance(chain[-1][0])
    return outcome
