"""The PCnet-FAST III model driven as Linux's pcnet32 drives it (probe, open, rings, address filter,
MII link, reset, saved state), and guest garbage that must never raise."""

import random
import struct
import zlib

import msgpack
import pytest

from services.hw.chipset.pci import COMMAND, COMMAND_IO, COMMAND_MEMORY
from services.hw.net.pcnet import CHIPS, INTA, IO_SIZE, MMIO_SIZE, PcNet, PcNetPci
from services.hw.net.pcnet import registers as r
from tests.support.card_memory import CardMemory

MAC = bytes.fromhex("080027a1b2c3")
PEER = bytes.fromhex("525400123456")
INIT_BLOCK, TX_RING, RX_RING, TX_BUFFERS, RX_BUFFERS = 0x1000, 0x2000, 0x3000, 0x10000, 0x40000
PKT_BUF_SIZE = 1542                  # pcnet32's receive buffer (PKT_BUF_SKB - NET_IP_ALIGN)
OWN, ERR, STP, ENP = 0x8000, 0x4000, 0x0200, 0x0100


Memory = CardMemory


class Access:
    """pcnet32's register accessors: pcnet32_wio_* (16-bit ports) or pcnet32_dwio_* (32-bit)."""

    def __init__(self, nic, dwio):
        self.nic, self.dwio = nic, dwio
        self.size = 4 if dwio else 2
        self.rdp, self.rap, self.reset_port, self.bdp = (0x10, 0x14, 0x18, 0x1C) if dwio else (0x10, 0x12, 0x14, 0x16)

    def _in(self, port):
        return self.nic.io_read(port, self.size)

    def _out(self, port, value):
        self.nic.io_write(port, self.size, value)

    def read_csr(self, index):
        self._out(self.rap, index)
        return self._in(self.rdp) & 0xFFFF

    def write_csr(self, index, value):
        self._out(self.rap, index)
        self._out(self.rdp, value)

    def read_bcr(self, index):
        self._out(self.rap, index)
        return self._in(self.bdp) & 0xFFFF

    def write_bcr(self, index, value):
        self._out(self.rap, index)
        self._out(self.bdp, value)

    def reset(self):
        self._in(self.reset_port)

    def check(self):
        self._out(self.rap, 88)
        return self._in(self.rap) & 0xFFFF == 88

    def mdio_read(self, phy, register):
        self.write_bcr(33, phy << 5 | register)
        return self.read_bcr(34)

    def mdio_write(self, phy, register, value):
        self.write_bcr(33, phy << 5 | register)
        self.write_bcr(34, value)


def probe(nic):
    """pcnet32_probe1: the 16-bit check first, then the 32-bit one; then the chip version."""
    wio, dwio = Access(nic, False), Access(nic, True)
    wio.reset()
    if wio.read_csr(0) == 4 and wio.check():
        access = wio
    else:
        dwio.reset()
        assert dwio.read_csr(0) == 4 and dwio.check(), "No access methods"
        access = dwio
    chip_version = access.read_csr(88) | access.read_csr(89) << 16
    assert chip_version & 0xFFF == 0x003
    return access, (chip_version >> 12) & 0xFFFF


def init_block_32(rx_log2=2, tx_log2=2, mode=0, ladrf=0):
    return struct.pack("<HH6s2xQII", mode, tx_log2 << 12 | rx_log2 << 4, MAC, ladrf, RX_RING, TX_RING)


def rx_descriptor(index, size=PKT_BUF_SIZE, owned=True):
    return struct.pack("<IHHII", RX_BUFFERS + index * 0x800, -size & 0xFFFF, OWN if owned else 0, 0, 0)


def put_rx_ring(memory, count, size=PKT_BUF_SIZE):
    for i in range(count):
        memory.write(RX_RING + 16 * i, rx_descriptor(i, size))


def open_card(nic, memory, rx_log2=2, tx_log2=2):
    """pcnet32_open: reset, 32-bit style, media setup, init block, INIT, wait for IDON, STRT|IENA."""
    a, _ = probe(nic)
    a.reset()
    a.write_bcr(20, 2)
    a.write_bcr(2, (a.read_bcr(2) & ~2) | 2)                    # ASEL
    a.write_bcr(9, a.read_bcr(9) & ~3)
    a.write_csr(124, a.read_csr(124) & ~0x10)
    a.write_bcr(32, a.read_bcr(32) | 0x0080)                    # DANAS while changing the PHY
    a.write_bcr(32, (a.read_bcr(32) & ~0x98) | 0x20)            # autonegotiate
    put_rx_ring(memory, 1 << rx_log2)
    for i in range(1 << tx_log2):
        memory.write(TX_RING + 16 * i, bytes(16))
    memory.write(INIT_BLOCK, init_block_32(rx_log2, tx_log2))
    for i in range(4):
        a.write_csr(8 + i, 0)                                   # pcnet32_load_multicast
    a.write_csr(1, INIT_BLOCK & 0xFFFF)
    a.write_csr(2, INIT_BLOCK >> 16)
    a.write_csr(4, 0x0915)                                      # auto transmit pad, masks
    a.write_csr(0, r.INIT)
    assert a.read_csr(0) & r.IDON
    a.write_csr(0, r.STRT | r.IENA)
    return a


def interrupt_handler(a):
    """pcnet32_interrupt: acknowledge what CSR0 shows (which also clears IENA until NAPI is done)."""
    csr0 = a.read_csr(0)
    if csr0 & 0x8F00:
        a.write_csr(0, csr0 & ~0x004F)
    return csr0


@pytest.fixture
def card():
    memory, sent, irq, space = Memory(), [], [], []
    nic = PcNet("Am79C973", MAC, memory, transmit=sent.append, set_irq=irq.append,
                on_receive_space=lambda: space.append(True))
    nic.memory_, nic.sent, nic.irq, nic.space = memory, sent, irq, space
    return nic


def test_probe_finds_the_prom_mac_and_the_fast_iii(card):
    prom = bytes(card.io_read(i, 1) for i in range(16))
    assert prom[:6] == MAC and prom[14:16] == b"WW"
    assert int.from_bytes(prom[12:14], "little") == (sum(prom[:12]) + sum(prom[14:])) & 0xFFFF
    assert card.io_read(0, 2) == int.from_bytes(MAC[:2], "little")
    a, version = probe(card)
    assert not a.dwio and version == 0x2625                     # "PCnet/FAST III 79C973"
    assert b"".join(a.read_csr(12 + i).to_bytes(2, "little") for i in range(3)) == MAC
    # pcnet32 scans all 32 MII addresses: one PHY, the Am79C874, at address 0
    found = [i for i in range(32) if a.mdio_read(i, 2) != 0xFFFF and a.mdio_read(i, 3) != 0xFFFF]
    assert found == [0] and (a.mdio_read(0, 2), a.mdio_read(0, 3)) == (0x0022, 0x561B)
    assert set(CHIPS) == {"Am79C973", "Am79C970A"} and IO_SIZE == MMIO_SIZE == 32 and INTA == 1


def test_the_pci_ii_is_the_same_model_without_mii():
    nic = PcNet("Am79C970A", MAC, Memory(), transmit=lambda f: None, set_irq=lambda level: None)
    a, version = probe(nic)
    assert version == 0x2621                                    # "PCnet/PCI II 79C970A"
    assert a.mdio_read(0, 1) == 0xFFFF
    assert a.read_bcr(4) != 0xC0                                # pcnet32_get_link without MII: link up
    nic.set_link(False)
    assert a.read_bcr(4) == 0xC0
    with pytest.raises(ValueError):
        PcNet("Am79C974", MAC, Memory(), transmit=lambda f: None, set_irq=lambda level: None)


def test_a_dword_write_to_rdp_switches_to_dword_io_until_hard_reset(card):
    wio = Access(card, False)
    assert wio.read_csr(0) == r.STOP
    card.io_write(0x10, 4, 0)                                   # the switch; its data goes nowhere
    assert card.io_read(0x10, 2) == 0xFFFF and card.io_read(0x12, 2) == 0xFFFF
    a, version = probe(card)                                    # a warm reboot finds the chip in DWIO
    assert a.dwio and version == 0x2625
    assert a.read_bcr(18) & r.DWIO
    a.write_bcr(18, 0x9001)                                     # DWIO is not writable through BCR18
    a.reset()
    assert a.read_csr(0) == r.STOP and a.read_bcr(18) & r.DWIO  # a software reset keeps the mode
    card.write(0x14, 4, 0)                                      # the memory BAR decodes the same ports
    assert card.read(0x10, 4) == r.STOP
    card.reset()
    assert probe(card)[0].dwio is False


def test_open_initializes_from_the_init_block_and_raises_idon(card):
    a = open_card(card, card.memory_)
    csr0 = a.read_csr(0)
    assert csr0 & (r.IDON | r.INTR | r.TXON | r.RXON | r.STRT | r.IENA) == r.IDON | r.INTR | r.TXON | r.RXON | r.STRT | r.IENA
    assert not csr0 & r.STOP and card.irq[-1] is True
    assert a.read_csr(58) == a.read_bcr(20) == 0x0302            # SWSTYLE 2: SSIZE32 and CSRPCNET
    assert a.read_csr(76) == -4 & 0xFFFF and a.read_csr(24) | a.read_csr(25) << 16 == RX_RING
    interrupt_handler(a)
    assert not a.read_csr(0) & (r.IDON | r.INTR) and card.irq[-1] is False
    a.write_csr(0, r.IENA)                                      # NAPI done: interrupts back on
    assert card.irq[-1] is False


def test_transmit_sends_a_two_descriptor_frame_and_raises_tint(card):
    memory = card.memory_
    a = open_card(card, memory)
    interrupt_handler(a)
    a.write_csr(0, r.IENA)
    frame = PEER + MAC + b"\x08\x00" + bytes(range(200))
    memory.write(TX_BUFFERS, frame[:14])
    memory.write(TX_BUFFERS + 0x100, frame[14:])
    # a driver hands the chain over back to front: STP's OWN last
    memory.write(TX_RING + 16, struct.pack("<IHHII", TX_BUFFERS + 0x100, -(len(frame) - 14) & 0xFFFF, OWN | ENP, 0, 0))
    memory.write(TX_RING, struct.pack("<IHHII", TX_BUFFERS, -14 & 0xFFFF, OWN | STP, 0, 0))
    a.write_csr(0, r.IENA | r.TDMD)
    assert card.sent == [frame]
    for i in range(2):
        status = int.from_bytes(memory.data[TX_RING + 16 * i + 6:TX_RING + 16 * i + 8], "little")
        assert not status & (OWN | ERR)
    assert a.read_csr(0) & r.TINT and card.irq[-1] is True
    interrupt_handler(a)
    assert card.irq[-1] is False
    # the next frame is short: padded to 60 on the wire
    memory.write(TX_BUFFERS + 0x800, frame[:20])
    memory.write(TX_RING + 32, struct.pack("<IHHII", TX_BUFFERS + 0x800, -20 & 0xFFFF, OWN | STP | ENP, 0, 0))
    a.write_csr(0, r.TDMD)
    assert card.sent[-1] == frame[:20] + bytes(40)


def test_receive_fills_the_ring_with_the_fcs_and_filters_addresses(card):
    memory = card.memory_
    a = open_card(card, memory)
    interrupt_handler(a)
    a.write_csr(0, r.IENA)
    frame = MAC + PEER + b"\x08\x00" + bytes(range(100))
    assert card.receive(frame)
    base, _, status, message_length, _ = struct.unpack_from("<IHHII", memory.data, RX_RING)
    assert (status >> 8) & 0xFF == 0x03 and not status & OWN and status & r.RX_PAM   # STP | ENP
    assert (message_length & 0xFFF) - 4 == len(frame)          # pcnet32's pkt_len
    assert bytes(memory.data[base:base + len(frame) + 4]) == frame + zlib.crc32(frame).to_bytes(4, "little")
    assert a.read_csr(0) & r.RINT and card.irq[-1] is True
    interrupt_handler(a)
    assert card.receive(bytes.fromhex("080027000001") + frame[6:])        # for someone else
    assert struct.unpack_from("<IHHII", memory.data, RX_RING + 16)[2] == OWN
    assert card.receive(b"\xff" * 6 + PEER + b"\x08\x06" + bytes(28))      # ARP broadcast, padded
    _, _, status, message_length, _ = struct.unpack_from("<IHHII", memory.data, RX_RING + 16)
    assert status & r.RX_BAM and message_length == 64
    # pcnet32_set_multicast_list: suspend, load LADRF, resume
    group = bytes.fromhex("01005e000001")
    crc = (zlib.crc32(group) ^ 0xFFFFFFFF) >> 26                # ether_crc_le(6, addr) >> 26
    a.write_csr(5, a.read_csr(5) | r.SPND)
    assert a.read_csr(5) & r.SPND
    table = [0, 0, 0, 0]
    table[crc >> 4] |= 1 << (crc & 0xF)
    for i in range(4):
        a.write_csr(8 + i, table[i])
    a.write_csr(5, a.read_csr(5) & ~r.SPND)
    assert card.receive(group + PEER + b"\x08\x00" + bytes(50))
    assert struct.unpack_from("<IHHII", memory.data, RX_RING + 32)[2] & r.RX_LAFM
    other_group = next(bytes.fromhex("01005e0000") + bytes([i]) for i in range(2, 256)
                       if (zlib.crc32(bytes.fromhex("01005e0000") + bytes([i])) ^ 0xFFFFFFFF) >> 26 != crc)
    assert card.receive(other_group + PEER + b"\x08\x00" + bytes(50))
    assert struct.unpack_from("<IHHII", memory.data, RX_RING + 48)[2] == OWN           # filtered out
    a.write_csr(5, r.SPND)
    a.write_csr(15, r.PROM)                                     # IFF_PROMISC
    a.write_csr(5, 0)
    assert card.receive(other_group + PEER + b"\x08\x00" + bytes(50))
    status = struct.unpack_from("<IHHII", memory.data, RX_RING + 48)[2]
    assert status & (OWN | STP | ENP) == STP | ENP and not status & (r.RX_PAM | r.RX_BAM | r.RX_LAFM)


def test_a_disabled_receiver_keeps_frames_with_the_caller(card):
    memory = card.memory_
    a = open_card(card, memory)
    a.write_csr(0, r.STOP)
    a.write_csr(15, r.DRX)
    a.write_csr(0, r.STRT)
    assert not a.read_csr(0) & r.RXON and a.read_csr(0) & r.TXON
    assert not card.receive(MAC + PEER + b"\x08\x00" + bytes(50)) and not card.can_receive()
    assert a.read_csr(112) == 0                                 # not a missed frame: nobody listens
    a.write_csr(0, r.STOP)
    a.write_csr(15, 0)
    card.space.clear()
    a.write_csr(0, r.STRT)
    assert card.space == [True] and card.receive(MAC + PEER + b"\x08\x00" + bytes(50))


def test_a_frame_spans_descriptors_and_a_full_ring_counts_a_miss(card):
    memory = card.memory_
    a = open_card(card, memory)
    interrupt_handler(a)
    put_rx_ring(memory, 4, size=256)
    frame = MAC + PEER + b"\x08\x00" + bytes(i & 0xFF for i in range(586))   # 600 + FCS: 3 buffers
    assert card.receive(frame)
    statuses = [struct.unpack_from("<IHHII", memory.data, RX_RING + 16 * i)[2] for i in range(4)]
    assert [s & (OWN | STP | ENP) for s in statuses] == [STP, 0, ENP, OWN]
    assert struct.unpack_from("<IHHII", memory.data, RX_RING + 32)[3] == 604
    received = b"".join(bytes(memory.data[RX_BUFFERS + i * 0x800:RX_BUFFERS + i * 0x800 + 256]) for i in range(3))
    assert received[:604] == frame + zlib.crc32(frame).to_bytes(4, "little")
    assert card.receive(frame[:100])                            # the last buffer
    card.space.clear()
    assert not card.receive(frame[:100])                        # ring full: the caller keeps it
    assert not card.receive(frame[:100])
    assert a.read_csr(0) & r.MISS and a.read_csr(112) == 1      # one miss per shortage, not per offer
    assert not card.can_receive(100)
    memory.write(RX_RING, rx_descriptor(0, 256))                # pcnet32_rx gives a buffer back
    interrupt_handler(a)                                        # ...and the ack tells the caller
    assert card.space == [True] and card.can_receive(100)
    assert card.receive(frame[:100])
    assert a.read_csr(112) == 1


def test_the_mii_phy_and_the_carrier_follow_the_cable(card):
    memory = card.memory_
    a = open_card(card, memory)
    assert a.mdio_read(0, 1) & 0x0004 and a.mdio_read(0, 1) & 0x0020        # link, negotiation done
    assert a.mdio_read(0, 0) & 0x1000                                       # BMCR: autonegotiation on
    assert a.mdio_read(0, 4) & a.mdio_read(0, 5) & 0x0100                   # 100BASE-TX full duplex
    card.set_link(False)
    assert not card.link_up
    assert not a.mdio_read(0, 1) & 0x0004 and not a.mdio_read(0, 1) & 0x0004  # mii_link_ok reads twice
    assert a.mdio_read(0, 5) == 0
    card.space.clear()
    assert card.receive(MAC + PEER + b"\x08\x00" + bytes(50))      # the cable is out: dropped, not kept
    assert struct.unpack_from("<IHHII", memory.data, RX_RING)[2] == OWN
    memory.write(TX_BUFFERS, PEER + MAC + b"\x08\x00" + bytes(50))
    memory.write(TX_RING, struct.pack("<IHHII", TX_BUFFERS, -64 & 0xFFFF, OWN | STP | ENP, 0, 0))
    card.sent.clear()
    a.write_csr(0, r.IENA | r.TDMD)
    status, misc = struct.unpack_from("<HI", memory.data, TX_RING + 6)
    assert not card.sent and status & ERR and misc & r.TX_LCAR and a.read_csr(0) & r.CERR
    card.set_link(True)
    a.mdio_read(0, 1)
    assert a.mdio_read(0, 1) & 0x0004
    a.mdio_write(0, 0, 0x0800)                                  # powered down: no link
    assert not a.mdio_read(0, 1) & 0x0004
    a.mdio_write(0, 0, 0x8000)                                  # PHY reset
    assert a.mdio_read(0, 0) == 0x3100 and a.mdio_read(0, 1) & 0x0004


def test_software_and_hardware_reset(card):
    a = open_card(card, card.memory_)
    assert card.irq[-1] is True
    a.write_csr(15, 0x8000)                                     # refused: the chip runs
    assert a.read_csr(15) == 0
    a.reset()
    assert a.read_csr(0) == r.STOP and card.irq[-1] is False
    assert a.read_csr(4) == 0x0115 and a.read_csr(76) == 0
    assert a.read_bcr(20) == 0x0302                             # BCRs survive a software reset
    a.write_csr(15, 0x8000)
    assert a.read_csr(15) == 0x8000
    card.reset()
    assert a.read_bcr(20) == 0x0200 and a.read_csr(15) == 0 and a.read_bcr(32) & 0x20


def test_snapshot_restores_a_running_card(card):
    memory = card.memory_
    a = open_card(card, memory)
    assert card.receive(MAC + PEER + b"\x08\x00" + bytes(50))
    state = msgpack.unpackb(msgpack.packb(card.snapshot()))
    copy = Memory()
    copy.data[:] = memory.data
    sent, irq = [], []
    other = PcNet("Am79C973", MAC, copy, transmit=sent.append, set_irq=irq.append)
    other.restore(state)
    assert other.snapshot() == state
    assert irq == [True]                                        # IDON and RINT still pending
    b = Access(other, False)
    assert b.read_csr(0) == a.read_csr(0) and b.read_bcr(20) == 0x0302
    copy.write(TX_BUFFERS, PEER + MAC + b"\x08\x00" + bytes(50))
    copy.write(TX_RING, struct.pack("<IHHII", TX_BUFFERS, -64 & 0xFFFF, OWN | STP | ENP, 0, 0))
    b.write_csr(0, r.IENA | r.TDMD)
    assert len(sent) == 1 and len(sent[0]) == 64
    assert other.receive(MAC + PEER + b"\x08\x00" + bytes(50))
    assert struct.unpack_from("<IHHII", copy.data, RX_RING + 16)[3] == 68      # the ring went on
    # another MAC address is allowed (a teleport target has its own): the guest keeps the saved one
    PcNet("Am79C973", PEER, Memory(), transmit=lambda f: None, set_irq=lambda level: None).restore(state)
    with pytest.raises(ValueError):
        PcNet("Am79C970A", MAC, Memory(), transmit=lambda f: None, set_irq=lambda level: None).restore(state)


def test_sixteen_bit_software_style_uses_lance_descriptors(card):
    memory = card.memory_
    a, _ = probe(card)
    a.write_bcr(20, 0)
    block = struct.pack("<H6sQHHHH", 0, MAC, 0, RX_RING & 0xFFFF, 1 << 13, TX_RING & 0xFFFF, 1 << 13)
    memory.write(INIT_BLOCK, block)
    for i in range(2):                                          # 8-byte RMDs: LADR, HADR/status, BCNT, MCNT
        memory.write(RX_RING + 8 * i, struct.pack("<HBBHH", (RX_BUFFERS + i * 0x800) & 0xFFFF,
                                                   (RX_BUFFERS + i * 0x800) >> 16, 0x80, -PKT_BUF_SIZE & 0xFFFF, 0))
    memory.write(TX_BUFFERS, PEER + MAC + b"\x08\x00" + bytes(46))
    memory.write(TX_RING, struct.pack("<HBBHH", TX_BUFFERS & 0xFFFF, TX_BUFFERS >> 16, 0x83, -60 & 0xFFFF, 0))
    a.write_csr(1, INIT_BLOCK)
    a.write_csr(2, 0)
    a.write_csr(0, r.INIT | r.STRT | r.IENA)
    assert card.sent == [PEER + MAC + b"\x08\x00" + bytes(46)]
    assert memory.data[TX_RING + 3] == 0x03                     # OWN cleared, STP|ENP kept
    assert card.receive(MAC + PEER + b"\x08\x00" + bytes(50))
    assert memory.data[RX_RING + 3] == 0x03
    assert struct.unpack_from("<H", memory.data, RX_RING + 6)[0] == 68
    assert a.read_csr(0) & (r.TINT | r.RINT) == r.TINT | r.RINT


def test_software_style_3_puts_the_buffer_address_last(card):
    memory = card.memory_
    a, _ = probe(card)
    a.write_bcr(20, 3)
    memory.write(INIT_BLOCK, init_block_32(1, 1))
    memory.write(TX_BUFFERS, PEER + MAC + b"\x08\x00" + bytes(46))
    memory.write(TX_RING, struct.pack("<IHHII", 0, -60 & 0xFFFF, OWN | STP | ENP, TX_BUFFERS, 0))
    a.write_csr(1, INIT_BLOCK)
    a.write_csr(0, r.INIT | r.STRT)
    assert len(card.sent) == 1 and not struct.unpack_from("<H", memory.data, TX_RING + 6)[0] & OWN


def test_internal_loopback_receives_what_it_sends(card):
    """pcnet32_loopback_test (ethtool -t): CSR15 LOOP|INTL; nothing reaches the wire."""
    memory = card.memory_
    a = open_card(card, memory)
    a.write_csr(0, r.STOP)
    a.write_csr(15, a.read_csr(15) | 0x0044)
    frame = MAC + MAC + b"\x08\x06" + bytes(range(61))
    memory.write(TX_BUFFERS, frame)
    memory.write(TX_RING, struct.pack("<IHHII", TX_BUFFERS, -len(frame) & 0xFFFF, OWN | STP | ENP, 0, 0))
    a.write_csr(0, r.STRT)
    assert card.sent == []
    assert bytes(memory.data[RX_BUFFERS:RX_BUFFERS + len(frame)]) == frame


def test_pci_function_identity_and_bars():
    moves = []
    pci = PcNetPci("Am79C973", on_mmio_change=lambda a: moves.append(("mmio", a)),
                   on_io_change=lambda a: moves.append(("io", a)))
    assert pci.config_read(0, 4) == 0x20001022 and pci.config_read(0x08, 4) == 0x02000040
    assert pci.config_read(0x2C, 4) == 0x20001022 and pci.config_read(0x3D, 1) == INTA
    pci.config_write(0x10, 4, 0xFFFFFFFF)
    assert pci.config_read(0x10, 4) == 0xFFFFFFE1               # 32 I/O ports
    pci.config_write(0x14, 4, 0xFFFFFFFF)
    assert pci.config_read(0x14, 4) == 0xFFFFFFE0               # 32 bytes of memory
    pci.config_write(0x10, 4, 0xC000)
    pci.config_write(0x14, 4, 0xFEB00000)
    pci.config_write(COMMAND, 2, COMMAND_IO | COMMAND_MEMORY)
    assert ("io", 0xC000) in moves and ("mmio", 0xFEB00000) in moves
    pci.reset()
    assert moves[-2:] in ([("mmio", None), ("io", None)], [("io", None), ("mmio", None)])
    assert PcNetPci("Am79C970A", on_mmio_change=print, on_io_change=print).config_read(8, 1) == 0x16


def test_guest_garbage_never_raises(card):
    memory = card.memory_
    a = open_card(card, memory, rx_log2=2, tx_log2=2)
    # a transmit chain with no end, a descriptor pointing past RAM, zero-length and oversized frames
    for i in range(4):
        memory.write(TX_RING + 16 * i, struct.pack("<IHHII", TX_BUFFERS, -100 & 0xFFFF, OWN | (STP if i == 0 else 0),
                                                    0, 0))
    a.write_csr(0, r.IENA | r.TDMD)
    assert not card.sent and not a.read_csr(0) & r.TXON         # underflow stops the transmitter
    misc = struct.unpack_from("<I", memory.data, TX_RING + 56)[0]
    assert misc & r.TX_UFLO and misc & r.TX_BUFF
    open_card(card, memory)
    memory.write(TX_RING, struct.pack("<IHHII", 0xFFFFF000, -1000 & 0xFFFF, OWN | STP | ENP, 0, 0))
    memory.write(TX_RING + 16, struct.pack("<IHHII", TX_BUFFERS, 0, OWN | STP | ENP, 0, 0))
    memory.write(TX_RING + 32, struct.pack("<IHHII", TX_BUFFERS, -2000 & 0xFFFF, OWN | STP | ENP, 0, 0))
    a.write_csr(0, r.IENA | r.TDMD)
    assert not card.sent and a.read_csr(0) & r.MERR
    # receive descriptors with zero-length buffers and buffers outside RAM
    for i in range(4):
        memory.write(RX_RING + 16 * i, struct.pack("<IHHII", 0xFFFFFF00 if i else RX_BUFFERS, 0, OWN, 0, 0))
    assert card.receive(MAC + PEER + b"\x08\x00" + bytes(50))   # cut: the ring holds nothing
    status = struct.unpack_from("<IHHII", memory.data, RX_RING + 48)[2]
    assert status & ERR and status & r.RX_BUFF
    # an init block and rings outside RAM
    memory.write(INIT_BLOCK, struct.pack("<HH6s2xQII", 0, 0xFFFF, MAC, 0, 0xFFFFFFF0, 0xFFFFFFF0))
    a.write_csr(0, r.STOP)
    a.write_csr(0, r.INIT | r.STRT | r.IENA)
    a.write_csr(0, r.TDMD)
    card.receive(MAC + PEER + b"\x08\x00" + bytes(50))
    a.write_csr(0, r.STOP)
    a.write_csr(1, 0xFFF0)
    a.write_csr(2, 0xFFFF)
    a.write_csr(0, r.INIT)
    assert a.read_csr(0) & r.MERR and not a.read_csr(0) & r.IDON
    # then anything at all, through both BARs
    rng = random.Random(1)
    for _ in range(20000):
        offset, size = rng.randrange(40), rng.choice((1, 2, 4))
        value = rng.getrandbits(32)
        kind = rng.randrange(6)
        if kind == 0:
            card.io_write(offset, size, value)
        elif kind == 1:
            card.io_read(offset, size)
        elif kind == 2:
            card.write(offset, size, value)
        elif kind == 3:
            memory.write(rng.randrange(0x1000, 0x4000), rng.randbytes(16))
        elif kind == 4:
            card.receive(rng.choice((MAC, b"\xff" * 6, rng.randbytes(6))) + rng.randbytes(rng.randrange(0, 1600)))
        else:
            Access(card, bool(rng.getrandbits(1))).write_csr(rng.choice((0, 0, 1, 2, 3, 4, 5, 15, 58, 76, 78)), value & 0xFFFF)
        card.can_receive(rng.randrange(2000))
    msgpack.packb(card.snapshot())
