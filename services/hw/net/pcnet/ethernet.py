"""The Ethernet frame sizes the chip holds frames to, without the 4-byte FCS, which the backend
never sees: 60 at least (shorter frames are padded), 1518 at most, 1522 with an 802.1Q tag."""

MIN_FRAME, MAX_FRAME, MAX_TAGGED_FRAME, FCS_SIZE = 60, 1518, 1522, 4
VLAN_TYPE = b"\x81\x00"


def fits_the_wire(frame: bytes) -> bool:
    """Has a header and is no longer than Ethernet (with a VLAN tag, if it has one) allows."""
    length = len(frame)
    return 14 <= length <= MAX_FRAME or (length <= MAX_TAGGED_FRAME and frame[12:14] == VLAN_TYPE)
