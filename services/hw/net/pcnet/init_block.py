"""The initialization block the chip reads from guest memory on INIT: mode, station address,
multicast filter and both descriptor rings, in its 16-bit (SSIZE32=0) or 32-bit (SSIZE32=1) form."""

from __future__ import annotations

import struct
from typing import NamedTuple

SIZE_16, SIZE_32 = 24, 28
MAX_LOG2_RING_32 = 9            # a 32-bit block's 4-bit length field saturates at 512 descriptors
_LAYOUT_16 = struct.Struct("<H6sQHHHH")
_LAYOUT_32 = struct.Struct("<HH6s2xQII")


class InitBlock(NamedTuple):
    mode: int
    mac: bytes
    multicast_filter: int       # LADRF as one 64-bit number, bit n = hash value n
    rx_base: int
    rx_log2: int
    tx_base: int
    tx_log2: int


def read_init_block(memory, address: int, ssize32: bool, upper: int) -> InitBlock:
    """`upper` supplies address bits 31-24 in 16-bit mode (from IADR's high byte).
    Raises ValueError when the block is not in guest RAM."""
    if ssize32:
        mode, lengths, mac, ladrf, rdra, tdra = _LAYOUT_32.unpack(memory.read(address, SIZE_32))
        return InitBlock(mode, mac, ladrf, rdra, min((lengths >> 4) & 0xF, MAX_LOG2_RING_32),
                         tdra, min(lengths >> 12, MAX_LOG2_RING_32))
    mode, mac, ladrf, rdra_low, rdra_high, tdra_low, tdra_high = _LAYOUT_16.unpack(memory.read(address, SIZE_16))
    return InitBlock(mode, mac, ladrf, upper | (rdra_high & 0xFF) << 16 | rdra_low, rdra_high >> 13,
                     upper | (tdra_high & 0xFF) << 16 | tdra_low, tdra_high >> 13)
