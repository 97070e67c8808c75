"""The virtio network card driven as Linux's legacy virtio_pci and virtio_net drive it: reset,
feature negotiation, queues placed by page frame, DRIVER_OK, then frames both ways with the
interrupt rules, link changes, checksum and TSO offloads, reset, snapshots, and guest garbage."""

import logging
import struct

import msgpack
import pytest

from services.hw.chipset.pci import BAR0, COMMAND, COMMAND_IO, COMMAND_MEMORY
from services.hw.net.checksum import ones_sum
from services.hw.net.virtio import (
    CHIPS,
    INTA,
    IO_SIZE,
    MMIO_SIZE,
    VirtioNet,
    VirtioNetPci,
)
from tests.support.card_memory import CardMemory

MAC = bytes.fromhex("080027a1b2c3")
PEER = bytes.fromhex("525400123502")
RX_RING, TX_RING = 0x10000, 0x20000           # page aligned, as vring_create_virtqueue allocates
BUFFERS, INDIRECT = 0x100000, 0x0F0000
ACKNOWLEDGE, DRIVER, DRIVER_OK = 0x01, 0x02, 0x04
DESC_NEXT, DESC_WRITE, DESC_INDIRECT = 0x1, 0x2, 0x4
F_CSUM, F_MAC, F_HOST_TSO4, F_HOST_TSO6, F_MRG_RXBUF, F_STATUS = 0, 5, 11, 12, 15, 16
F_ANY_LAYOUT, F_INDIRECT, F_EVENT_IDX = 27, 28, 29
NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6 = 0x01, 0x01, 0x04


Memory = CardMemory


def u16(memory, address):
    return int.from_bytes(memory.data[address:address + 2], "little")


class DriverRing:
    """The driver's half of a split virtqueue, laid out as Linux lays out a legacy vring."""

    def __init__(self, memory, base, size=256):
        self.memory, self.size = memory, size
        self.desc, self.avail = base, base + 16 * size
        self.used = (self.avail + 6 + 2 * size + 4095) & ~4095
        self.next_free = self.avail_idx = self.last_used = 0
        memory.write(base, bytes(self.used + 6 + 8 * size - base))     # Linux hands over zeroed rings

    def descriptor(self, index, address, length, flags=0, following=0, table=None):
        where = (self.desc if table is None else table) + 16 * index
        self.memory.write(where, struct.pack("<QIHH", address, length, flags, following))

    def add(self, buffers, indirect_table=None):
        """A chain of (address, length, device_writable) buffers, or one indirect descriptor."""
        last = len(buffers) - 1
        if indirect_table is not None:
            for i, (address, length, writable) in enumerate(buffers):
                flags = (DESC_WRITE if writable else 0) | (DESC_NEXT if i < last else 0)
                self.descriptor(i, address, length, flags, i + 1, table=indirect_table)
            head = self.allocate()
            self.descriptor(head, indirect_table, 16 * len(buffers), DESC_INDIRECT)
        else:
            indexes = [self.allocate() for _ in buffers]
            for i, (address, length, writable) in enumerate(buffers):
                flags = (DESC_WRITE if writable else 0) | (DESC_NEXT if i < last else 0)
                self.descriptor(indexes[i], address, length, flags, indexes[i + 1] if i < last else 0)
            head = indexes[0]
        self.offer(head)
        return head

    def allocate(self):
        index = self.next_free
        self.next_free = (index + 1) % self.size
        return index

    def offer(self, head):
        self.memory.write(self.avail + 4 + 2 * (self.avail_idx % self.size), head.to_bytes(2, "little"))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.write(self.avail + 2, self.avail_idx.to_bytes(2, "little"))

    def take_used(self):
        entries = []
        while self.last_used != u16(self.memory, self.used + 2):
            at = self.used + 4 + 8 * (self.last_used % self.size)
            entries.append(struct.unpack("<II", self.memory.data[at:at + 8]))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return entries

    def no_interrupt(self, on=True):
        self.memory.write(self.avail, (1 if on else 0).to_bytes(2, "little"))

    def set_used_event(self, value):
        self.memory.write(self.avail + 4 + 2 * self.size, value.to_bytes(2, "little"))

    @property
    def avail_event(self):
        return u16(self.memory, self.used + 4 + 8 * self.size)


class Card:
    """The card with what it hands out recorded, and Linux's legacy virtio_pci steps as methods."""

    def __init__(self, link_up=True):
        self.memory, self.sent, self.irq, self.space = Memory(), [], [], []
        self.nic = VirtioNet("virtio", MAC, self.memory, transmit=self.sent.append, set_irq=self.irq.append,
                             link_up=link_up, on_receive_space=lambda: self.space.append(True))
        self.rx, self.tx = DriverRing(self.memory, RX_RING), DriverRing(self.memory, TX_RING)

    def probe(self, wanted=(F_MAC, F_STATUS)):
        nic = self.nic
        nic.io_write(0x12, 1, 0)                               # vp_reset, then read back
        assert nic.io_read(0x12, 1) == 0
        nic.io_write(0x12, 1, ACKNOWLEDGE)
        nic.io_write(0x12, 1, ACKNOWLEDGE | DRIVER)
        offered = nic.io_read(0x00, 4)
        self.features = offered & sum(1 << bit for bit in wanted)
        nic.io_write(0x04, 4, self.features)
        for index, ring in enumerate((self.rx, self.tx)):      # setup_vq
            nic.io_write(0x0E, 2, index)
            assert nic.io_read(0x0C, 2) == ring.size
            assert nic.io_read(0x08, 4) == 0                   # not already active
            nic.io_write(0x08, 4, ring.desc >> 12)
        nic.io_write(0x0E, 2, 2)
        assert nic.io_read(0x0C, 2) == 0                       # no control queue
        nic.io_write(0x12, 1, ACKNOWLEDGE | DRIVER | DRIVER_OK)
        self.header = 12 if self.features >> F_MRG_RXBUF & 1 else 10
        return offered

    def kick(self, queue):
        self.nic.io_write(0x10, 2, queue)

    def isr(self):
        return self.nic.io_read(0x13, 1)

    def send(self, header, frame, split=None):
        """virtio_net's xmit_skb: the header in a buffer of its own, then the frame (in pieces)."""
        self.memory.write(BUFFERS, header)
        self.memory.write(BUFFERS + 0x100, frame)
        pieces = [(BUFFERS, len(header), False)]
        cut = split or len(frame)
        pieces.append((BUFFERS + 0x100, cut, False))
        if cut < len(frame):
            pieces.append((BUFFERS + 0x100 + cut, len(frame) - cut, False))
        head = self.tx.add(pieces)
        self.kick(1)
        return head

    def post_receive(self, count, size=10 + 1518, base=BUFFERS + 0x40000):
        """add_recvbuf_small: room for the header and GOOD_PACKET_LEN."""
        for i in range(count):
            self.rx.add([(base + i * 0x1000, size, True)])
        self.kick(0)


@pytest.fixture
def card():
    card = Card()
    card.probe()
    return card


def frame_to_guest(length=100):
    return MAC + PEER + b"\x08\x00" + bytes(i & 0xFF for i in range(length - 14))


def header(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0, mergeable=False):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) + (
        b"\0\0" if mergeable else b"")


# -- identity and bring-up -------------------------------------------------------------------

def test_pci_face_is_a_transitional_virtio_net_function():
    moves = {"io": [], "mmio": []}
    pci = VirtioNetPci("virtio", on_mmio_change=moves["mmio"].append, on_io_change=moves["io"].append)
    assert pci.config_read(0x00, 4) == 0x1000_1AF4
    assert pci.config_read(0x2C, 4) == 0x0001_1AF4            # subsystem: virtio type 1, network
    assert pci.config_read(0x08, 4) == 0x02000000              # class 0x020000, revision 0 (legacy ABI)
    assert pci.config_read(0x3D, 1) == INTA
    assert not pci.config_read(0x06, 2) & 0x10                 # no capabilities: the legacy driver binds
    pci.config_write(BAR0, 4, 0xFFFFFFFF)
    assert pci.config_read(BAR0, 4) == (~(IO_SIZE - 1) & 0xFFFFFFFF) | 1
    pci.config_write(BAR0 + 4, 4, 0xFFFFFFFF)
    assert pci.config_read(BAR0 + 4, 4) == ~(MMIO_SIZE - 1) & 0xFFFFFFFF
    assert IO_SIZE & (IO_SIZE - 1) == 0 and IO_SIZE >= 0x14 + 8
    pci.config_write(BAR0, 4, 0xC000)
    pci.config_write(BAR0 + 4, 4, 0xFEB00000)
    pci.config_write(COMMAND, 2, COMMAND_IO | COMMAND_MEMORY)
    assert moves == {"io": [0xC000], "mmio": [0xFEB00000]}
    pci.reset()
    assert moves == {"io": [0xC000, None], "mmio": [0xFEB00000, None]}
    assert CHIPS == ("virtio",)
    with pytest.raises(ValueError):
        VirtioNetPci("e1000", on_mmio_change=print, on_io_change=print)


def test_probe_offers_the_features_and_the_config_holds_mac_and_link():
    card = Card()
    offered = card.probe(wanted=range(32))
    for bit in (F_CSUM, F_MAC, F_HOST_TSO4, F_HOST_TSO6, F_MRG_RXBUF, F_STATUS, F_ANY_LAYOUT, F_INDIRECT,
                F_EVENT_IDX):
        assert offered >> bit & 1, bit
    assert not offered >> 17 & 1                                # no control queue
    assert card.nic.io_read(0x04, 4) == offered                 # accepted as written
    mac = bytes(card.nic.io_read(0x14 + i, 1) for i in range(6))   # vp_get: byte by byte
    assert mac == MAC
    status = card.nic.io_read(0x1A, 1) | card.nic.io_read(0x1B, 1) << 8
    assert status == 1                                          # VIRTIO_NET_S_LINK_UP
    assert card.nic.read(0x14, 4) == int.from_bytes(MAC[:4], "little")    # the memory BAR mirrors
    assert card.nic.io_read(0x12, 1) == ACKNOWLEDGE | DRIVER | DRIVER_OK
    assert card.space                                           # DRIVER_OK: buffers may be waiting
    card.nic.io_write(0x04, 4, 0xFFFFFFFF)
    assert card.nic.io_read(0x04, 4) == offered                 # only offered bits stick


def test_legacy_driver_sets_the_mac_through_the_config():
    card = Card()
    card.probe()
    for i, byte in enumerate(PEER):                             # virtnet_set_mac_address, legacy
        card.nic.io_write(0x14 + i, 1, byte)
    assert bytes(card.nic.io_read(0x14 + i, 1) for i in range(6)) == PEER
    card.nic.io_write(0x1A, 2, 0)                               # status is read-only
    assert card.nic.io_read(0x1A, 2) == 1
    card.nic.io_write(0x12, 1, 0)
    assert bytes(card.nic.io_read(0x14 + i, 1) for i in range(6)) == MAC


# -- transmit --------------------------------------------------------------------------------

def test_transmit_sends_the_frame_and_interrupts(card):
    frame = PEER + MAC + b"\x08\x00" + bytes(range(100))
    head = card.send(header(), frame)
    assert card.sent == [frame]
    assert card.tx.take_used() == [(head, 0)]
    assert card.irq == [True]
    assert card.isr() == 1 and card.irq == [True, False]       # read-to-clear lets the line go
    assert card.isr() == 0
    card.send(header(), frame, split=20)                        # a frame in two pieces
    assert card.sent == [frame, frame]


def test_transmit_with_mergeable_header_any_layout_and_indirect():
    card = Card()
    card.probe(wanted=(F_MAC, F_STATUS, F_MRG_RXBUF, F_ANY_LAYOUT, F_INDIRECT))
    assert card.header == 12
    frame = PEER + MAC + b"\x08\x00" + bytes(range(200))
    card.memory.write(BUFFERS, header(mergeable=True) + frame)  # header pushed before the data
    card.tx.add([(BUFFERS, 12 + len(frame), False)])
    card.memory.write(BUFFERS + 0x1000, frame)
    card.tx.add([(BUFFERS, 12, False), (BUFFERS + 0x1000, 50, False), (BUFFERS + 0x1000 + 50, 164, False)],
                indirect_table=INDIRECT)
    card.kick(1)
    assert card.sent == [frame, frame]
    assert len(card.tx.take_used()) == 2


def test_no_interrupt_flag_is_honoured(card):
    card.tx.no_interrupt()
    card.rx.no_interrupt()
    card.post_receive(1)
    card.send(header(), PEER + MAC + b"\x08\x00" + bytes(50))
    assert card.nic.receive(frame_to_guest())
    assert len(card.sent) == 1 and len(card.tx.take_used()) == 1 and len(card.rx.take_used()) == 1
    assert card.irq == [] and card.isr() == 0


def test_event_idx_suppresses_interrupts_and_asks_for_kicks():
    card = Card()
    card.probe(wanted=(F_MAC, F_STATUS, F_MRG_RXBUF, F_EVENT_IDX))
    card.post_receive(8)
    assert card.nic.receive(frame_to_guest())                   # used 0 -> 1 passes used_event 0
    assert card.irq == [True] and card.isr() == 1
    card.rx.set_used_event(3)                                   # interrupt once entry 3 is used
    assert card.nic.receive(frame_to_guest()) and card.nic.receive(frame_to_guest())
    assert card.irq == [True, False]
    assert card.nic.receive(frame_to_guest())
    assert card.irq == [True, False, True]
    frame = PEER + MAC + b"\x08\x00" + bytes(60)
    card.send(header(mergeable=True), frame)
    assert card.tx.avail_event == card.tx.avail_idx             # kick me at the next packet
    for _ in range(4):
        assert card.nic.receive(frame_to_guest())
    assert not card.nic.receive(frame_to_guest())               # dry: ask for a kick on refill
    assert card.rx.avail_event == card.rx.avail_idx == 8


# -- receive ---------------------------------------------------------------------------------

def test_receive_fills_a_buffer_and_interrupts(card):
    assert not card.nic.receive(frame_to_guest())               # nothing posted: caller keeps it
    assert not card.nic.can_receive()
    card.space.clear()
    card.post_receive(2)
    assert card.space == [True]                                 # the kick of queue 0
    assert card.nic.can_receive() and not card.nic.can_receive(2000)
    frame = frame_to_guest(300)
    assert card.nic.receive(frame)
    (head, length), = card.rx.take_used()
    assert length == 10 + len(frame)
    base = BUFFERS + 0x40000 + head * 0x1000
    assert card.memory.data[base:base + 10] == bytes(10)
    assert card.memory.data[base + 10:base + 10 + len(frame)] == frame
    assert card.irq == [True] and card.isr() == 1
    assert card.nic.receive(frame_to_guest(2000))               # bigger than any buffer: dropped
    assert card.rx.take_used() == []
    assert card.nic.receive(frame) and not card.nic.receive(frame)
    assert card.nic.receive(b"short")                           # a runt is consumed and dropped


def test_receive_into_header_and_data_buffers(card):
    """Older kernels post the header and the data as two buffers of one chain."""
    card.rx.add([(BUFFERS, 10, True), (BUFFERS + 0x100, 1518, True)])
    frame = frame_to_guest(200)
    assert card.nic.receive(frame)
    assert card.rx.take_used() == [(0, 210)]
    assert card.memory.data[BUFFERS + 0x100:BUFFERS + 0x100 + 200] == frame


def test_mergeable_receive_spreads_a_frame_over_buffers():
    card = Card()
    card.probe(wanted=(F_MAC, F_STATUS, F_MRG_RXBUF))
    card.post_receive(2, size=1000)
    frame = frame_to_guest(1800)
    assert not card.nic.can_receive(2100)
    assert card.nic.receive(frame)
    used = card.rx.take_used()
    assert used == [(0, 1000), (1, 12 + 1800 - 1000)]
    first, second = BUFFERS + 0x40000, BUFFERS + 0x41000
    assert card.memory.data[first:first + 12] == bytes(10) + (2).to_bytes(2, "little")   # num_buffers
    assert bytes(card.memory.data[first + 12:first + 1000]) + bytes(card.memory.data[second:second + 812]) == frame
    assert not card.nic.receive(frame)
    card.post_receive(1, size=1000, base=BUFFERS + 0x80000)
    assert not card.nic.receive(frame)                          # one buffer is not enough: none taken
    card.post_receive(1, size=1000, base=BUFFERS + 0x90000)
    assert card.nic.receive(frame)
    assert [length for _, length in card.rx.take_used()] == [1000, 812]


# -- link ------------------------------------------------------------------------------------

def test_link_down_interrupts_with_a_config_change(card):
    card.post_receive(1)
    card.nic.set_link(False)
    assert not card.nic.link_up
    assert card.irq == [True]
    assert card.isr() == 2 and card.irq == [True, False]
    assert card.nic.io_read(0x1A, 2) == 0
    assert not card.nic.receive(frame_to_guest()) and not card.nic.can_receive()
    card.send(header(), PEER + MAC + b"\x08\x00" + bytes(50))
    assert card.sent == [] and len(card.tx.take_used()) == 1    # returned, not sent
    card.nic.set_link(True)
    assert card.isr() & 2 and card.nic.io_read(0x1A, 2) == 1
    quiet = Card(link_up=False)
    quiet.nic.set_link(True)                                    # no driver yet: no interrupt
    assert quiet.irq == [] and quiet.nic.io_read(0x1A, 2) == 1


# -- offloads --------------------------------------------------------------------------------

def ipv4_packet(protocol, l4: bytes) -> bytearray:
    ip = bytearray(bytes.fromhex("4500") + (20 + len(l4)).to_bytes(2, "big") + bytes.fromhex("1234400040")
                   + bytes([protocol, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2]))
    ip[10:12] = (~ones_sum(ip) & 0xFFFF).to_bytes(2, "big")    # the stack's header checksum
    return bytearray(PEER + MAC + b"\x08\x00" + ip + l4)


def tcp_header(flags=0x18) -> bytearray:
    return bytearray((40000).to_bytes(2, "big") + (80).to_bytes(2, "big") + (1000).to_bytes(4, "big")
                     + bytes(4) + bytes([0x50, flags]) + (65535).to_bytes(2, "big") + bytes(4))


def checksum_ok(data) -> bool:
    return ones_sum(data) == 0


def linux_partial(packet: bytearray, l4: int, field: int, pseudo_addresses: bytes, protocol: int) -> None:
    """What CHECKSUM_PARTIAL leaves in the field: the pseudo-header sum with the whole length."""
    length = len(packet) - l4
    pseudo = ones_sum(pseudo_addresses + bytes([0, protocol]) + length.to_bytes(2, "big"))
    packet[l4 + field:l4 + field + 2] = pseudo.to_bytes(2, "big")


def test_partial_checksum_is_completed():
    card = Card()
    card.probe(wanted=(F_MAC, F_STATUS, F_CSUM))
    udp = bytearray((5353).to_bytes(2, "big") + (53).to_bytes(2, "big") + (8 + 40).to_bytes(2, "big")
                    + bytes(2) + bytes(range(40)))
    packet = ipv4_packet(17, udp)
    linux_partial(packet, 34, 6, bytes(packet[26:34]), 17)
    card.send(header(NEEDS_CSUM, csum_start=34, csum_offset=6), bytes(packet))
    sent, = card.sent
    pseudo = sent[26:34] + bytes([0, 17]) + (len(sent) - 34).to_bytes(2, "big")
    assert checksum_ok(pseudo + sent[34:]) and sent[40:42] != b"\0\0"
    assert sent[:34] == packet[:34] and sent[42:] == packet[42:]


def test_tso4_packet_becomes_valid_segments():
    card = Card()
    card.probe(wanted=(F_MAC, F_STATUS, F_CSUM, F_HOST_TSO4, F_MRG_RXBUF))
    payload = bytes((i * 7) & 0xFF for i in range(3000))
    packet = ipv4_packet(6, tcp_header() + payload)
    linux_partial(packet, 34, 16, bytes(packet[26:34]), 6)
    # hdr_len is skb_headlen(): the linear part, here more than the headers
    card.send(header(NEEDS_CSUM, GSO_TCPV4, hdr_len=154, gso_size=1000, csum_start=34, csum_offset=16,
                     mergeable=True), bytes(packet), split=154)
    assert len(card.sent) == 3
    sequence = 1000
    for index, frame in enumerate(card.sent):
        ip, tcp = frame[14:34], frame[34:]
        assert int.from_bytes(ip[2:4], "big") == len(frame) - 14
        assert int.from_bytes(ip[4:6], "big") == 0x1234 + index
        assert checksum_ok(ip)
        assert checksum_ok(ip[12:20] + bytes([0, 6]) + len(tcp).to_bytes(2, "big") + tcp)
        assert int.from_bytes(tcp[4:8], "big") == sequence
        sequence += len(tcp) - 20
        assert bool(tcp[13] & 0x08) == (index == 2)             # PSH only on the last segment
        assert len(tcp) - 20 <= 1000
    assert b"".join(frame[54:] for frame in card.sent) == payload


def test_tso6_packet_becomes_valid_segments():
    card = Card()
    card.probe(wanted=(F_MAC, F_STATUS, F_CSUM, F_HOST_TSO6))
    payload = bytes((i * 13) & 0xFF for i in range(2500))
    l4 = tcp_header() + payload
    source, destination = bytes.fromhex("fd00" + "00" * 13 + "0f"), bytes.fromhex("fd00" + "00" * 13 + "02")
    ip = bytes.fromhex("60000000") + len(l4).to_bytes(2, "big") + bytes([6, 64]) + source + destination
    packet = bytearray(PEER + MAC + b"\x86\xdd" + ip + l4)
    length = len(l4).to_bytes(4, "big")
    packet[54 + 16:54 + 18] = ones_sum(source + destination + length + bytes([0, 0, 0, 6])).to_bytes(2, "big")
    card.send(header(NEEDS_CSUM, GSO_TCPV6, hdr_len=74, gso_size=1200, csum_start=54, csum_offset=16),
              bytes(packet))
    assert len(card.sent) == 3
    for frame in card.sent:
        tcp = frame[54:]
        assert int.from_bytes(frame[18:20], "big") == len(tcp)
        assert checksum_ok(source + destination + len(tcp).to_bytes(4, "big") + bytes([0, 0, 0, 6]) + tcp)
    assert b"".join(frame[74:] for frame in card.sent) == payload


def test_unsupported_gso_is_dropped_and_the_queue_carries_on(card, caplog):
    frame = bytes(ipv4_packet(17, bytes(100)))
    with caplog.at_level(logging.WARNING, logger="headbox.hw.virtio"):
        card.send(header(NEEDS_CSUM, 0x03, gso_size=500, csum_start=34, csum_offset=6), frame)   # UFO
        card.send(header(0, GSO_TCPV4, gso_size=0), bytes(ipv4_packet(6, tcp_header())))
    assert card.sent == [] and len(card.tx.take_used()) == 2
    assert "dropped" in caplog.text
    card.send(header(), frame)
    assert card.sent == [frame]


# -- reset and state -------------------------------------------------------------------------

def test_status_zero_resets_the_device(card):
    card.nic.set_link(False)
    assert card.irq == [True]
    card.nic.io_write(0x12, 1, 0)
    assert card.irq == [True, False] and card.nic.io_read(0x13, 1) == 0
    assert card.nic.io_read(0x04, 4) == 0 and card.nic.io_read(0x12, 1) == 0
    card.nic.io_write(0x0E, 2, 1)
    assert card.nic.io_read(0x08, 4) == 0
    assert card.nic.io_read(0x1A, 2) == 0                       # the cable stays out
    card.nic.set_link(True)
    card.probe()                                                # a driver can start over
    card.tx = DriverRing(card.memory, TX_RING)
    card.send(header(), PEER + MAC + b"\x08\x00" + bytes(50))
    assert len(card.sent) == 1
    card.nic.reset()                                            # the VM's reset: the same
    assert card.nic.io_read(0x12, 1) == 0 and not card.nic.can_receive()


def test_snapshot_restore_round_trip(card):
    card.post_receive(4)
    assert card.nic.receive(frame_to_guest())
    card.send(header(), PEER + MAC + b"\x08\x00" + bytes(50))
    state = msgpack.unpackb(msgpack.packb(card.nic.snapshot()))
    sent, irq = [], []
    other = VirtioNet("virtio", MAC, card.memory, transmit=sent.append, set_irq=irq.append)
    other.restore(state)
    assert irq == [True]                                        # the pending ISR holds the line again
    assert other.io_read(0x12, 1) == ACKNOWLEDGE | DRIVER | DRIVER_OK
    card.nic = other
    card.send(header(), PEER + MAC + b"\x08\x00" + bytes(60))
    assert len(sent) == 1
    assert other.receive(frame_to_guest())
    assert [head for head, _ in card.rx.take_used()] == [0, 1]
    moved = VirtioNet("virtio", PEER, Memory(), transmit=print, set_irq=print)
    moved.restore(state)                      # another MAC is allowed: the guest keeps the saved one
    assert bytes(moved.config_mac) == MAC
    with pytest.raises(ValueError):
        VirtioNet("virtio", MAC, Memory(), transmit=print, set_irq=print).restore(dict(state, chip="82540EM"))


# -- garbage from the guest ------------------------------------------------------------------

def test_garbage_never_raises(card, caplog):
    nic, memory = card.nic, card.memory
    with caplog.at_level(logging.WARNING, logger="headbox.hw.virtio"):
        card.tx.descriptor(0, BUFFERS, 20, DESC_NEXT, 0)        # a chain that loops on itself
        card.tx.offer(0)
        card.kick(1)
        assert card.sent == [] and not nic.tx.ready
        assert "loop" in caplog.text
        card.probe()                                            # reset, fresh queues
        card.tx = DriverRing(memory, TX_RING)
        card.tx.add([(len(memory.data) - 4, 4096, False)])      # a buffer past RAM: dropped, returned
        card.tx.add([(BUFFERS, 0xFFFFFFFF, False)])             # 4 GiB: over the frame limit
        card.send(header(), PEER + MAC + b"\x08\x00" + bytes(50))
        assert len(card.sent) == 1 and len(card.tx.take_used()) == 3
        card.tx.descriptor(5, BUFFERS, 10, DESC_NEXT, 999)      # next past the table
        card.tx.offer(5)
        card.kick(1)
        assert not nic.tx.ready
    memory.write(0x70, struct.pack("<QIHH", BUFFERS, 10, DESC_INDIRECT, 0))
    for table in ((0x70, 16),                                   # an indirect table with an indirect entry
                  (len(memory.data), 64),                       # an indirect table outside RAM
                  (INDIRECT, 24)):                              # not a multiple of 16
        card.probe()
        card.tx = DriverRing(memory, TX_RING)
        card.tx.descriptor(0, *table, DESC_INDIRECT)
        card.tx.offer(0)
        card.kick(1)
        assert len(card.sent) == 1 and not nic.tx.ready
    card.probe()
    card.rx = DriverRing(memory, RX_RING)
    memory.write(card.rx.avail + 2, (4000).to_bytes(2, "little"))    # an index far past the ring
    assert not nic.receive(frame_to_guest()) and not nic.rx.ready
    card.probe()
    card.rx = DriverRing(memory, RX_RING)
    card.rx.add([(len(memory.data) - 8, 2000, True)])           # a receive buffer past RAM
    assert nic.receive(frame_to_guest())
    assert card.rx.take_used() == [(0, 0)]                      # returned empty: the driver drops it
    nic.io_write(0x0E, 2, 0)
    nic.io_write(0x08, 4, 0xFFFFF)                              # rings outside RAM
    assert not nic.rx.ready and not nic.receive(frame_to_guest())
    nic.io_write(0x0C, 2, 100)                                  # the size is the device's
    assert nic.io_read(0x0C, 2) == 256
    for offset, size, value in ((0x0E, 2, 0xFFFF), (0x08, 4, 5), (0x10, 2, 7), (0x10, 2, 0xFFFF), (0x11, 4, -1),
                                (0x00, 4, 0), (0x13, 1, 0xFF), (0x40, 4, 1), (0x03, 4, 0x12345678)):
        nic.io_write(offset, size, value)
        nic.io_read(offset, size)
    nic.write(0x12, 1, 0)                                       # the memory BAR: a reset too
    assert nic.read(0x12, 1) == 0
