"""The 8254x model driven as Linux's e1000 driver drives it: the EEPROM read bit by bit over
EECD (checksum 0xBABA, the MAC), the PHY over MDIC, a transmit ring with legacy, checksum-offload
and TSO packets, a receive ring with the address filter, link changes and interrupts."""

import zlib

import pytest

from services.hw.net.checksum import ones_sum
from services.hw.net.e1000 import registers as r
from services.hw.net.e1000.device import E1000
from services.hw.net.e1000.eeprom import CS, DI, DO, GNT, REQ, SK
from services.hw.net.e1000.phy import MDIC_ERROR, MDIC_OP_READ, MDIC_READY
from tests.support.card_memory import CardMemory

MAC = bytes.fromhex("080027a1b2c3")
TX_RING, RX_RING, BUFFERS = 0x10000, 0x20000, 0x40000


Memory = CardMemory


@pytest.fixture
def card():
    memory, sent, irq = Memory(), [], []
    nic = E1000("82540EM", MAC, memory, transmit=sent.append, set_irq=irq.append)
    nic.memory_, nic.sent, nic.irq = memory, sent, irq
    return nic


def eeprom_word(nic, address):
    """e1000_read_eeprom for Microwire: request, CS, opcode 110, 6 address bits, 16 data bits."""
    nic.write_register(r.EECD, REQ)
    assert nic.read_register(r.EECD) & GNT
    nic.write_register(r.EECD, REQ | CS)

    def clock_out(bit):
        base = REQ | CS | (DI if bit else 0)
        nic.write_register(r.EECD, base)
        nic.write_register(r.EECD, base | SK)
        nic.write_register(r.EECD, base)

    for bit in (1, 1, 0):
        clock_out(bit)
    for i in range(5, -1, -1):
        clock_out(address >> i & 1)
    word = 0
    for _ in range(16):
        nic.write_register(r.EECD, REQ | CS | SK)
        word = word << 1 | bool(nic.read_register(r.EECD) & DO)
        nic.write_register(r.EECD, REQ | CS)
    nic.write_register(r.EECD, 0)
    return word


def test_eeprom_holds_the_mac_and_a_valid_checksum(card):
    words = [eeprom_word(card, a) for a in range(64)]
    assert sum(words) & 0xFFFF == 0xBABA
    assert b"".join(w.to_bytes(2, "little") for w in words[:3]) == MAC
    assert words[0x0D] == 0x100E and words[0x0E] == 0x8086
    card.write_register(r.EERD, 1 | 2 << 8)
    assert card.read_register(r.EERD) >> 16 == words[2] and card.read_register(r.EERD) & 0x10


def phy_read(nic, register, phy=1):
    nic.write_register(r.MDIC, MDIC_OP_READ | register << 16 | phy << 21)
    value = nic.read_register(r.MDIC)
    assert value & MDIC_READY
    return value


def test_phy_identifies_as_m88_and_follows_the_cable(card):
    assert phy_read(card, 2) & 0xFFFF == 0x0141 and phy_read(card, 3) & 0xFFF0 == 0x0C20
    assert phy_read(card, 1) & 0x0024 == 0x0024                   # link up, autoneg complete
    assert phy_read(card, 1, phy=2) & MDIC_ERROR
    assert card.read_register(r.STATUS) & r.STATUS_LU
    card.write_register(r.IMS, r.ICR_LSC)
    card.set_link(False)
    assert card.irq[-1] is True
    assert not card.read_register(r.STATUS) & r.STATUS_LU
    assert not phy_read(card, 1) & 0x0004
    assert card.read_register(r.ICR) & r.ICR_LSC and card.irq[-1] is False   # read clears
    card.set_link(True)
    assert card.read_register(r.STATUS) & r.STATUS_LU


def setup_tx(nic, count=8):
    nic.write_register(r.TDBAL, TX_RING)
    nic.write_register(r.TDLEN, count * 16)
    nic.write_register(r.TDH, 0)
    nic.write_register(r.TDT, 0)
    nic.write_register(r.TCTL, r.TCTL_EN)
    nic.write_register(r.IMS, r.ICR_TXDW | r.ICR_RXT0)


def put_descriptor(memory, index, address, lower, upper=0, ring=TX_RING):
    memory.write(ring + 16 * index, address.to_bytes(8, "little") + lower.to_bytes(4, "little")
                 + upper.to_bytes(4, "little"))


def test_legacy_transmit_sends_the_frame_and_reports_done(card):
    frame = bytes(range(60))
    card.memory_.write(BUFFERS, frame)
    setup_tx(card)
    put_descriptor(card.memory_, 0, BUFFERS, len(frame) | (0x01 | 0x02 | 0x08) << 24)
    card.write_register(r.TDT, 1)
    assert card.sent == [frame]
    assert card.memory_.data[TX_RING + 12] & 1                     # DD written back
    assert card.read_register(r.TDH) == 1
    assert card.read_register(r.ICR) & r.ICR_TXDW


def ipv4_tcp_packet(payload: bytes, pseudo_no_length: bool) -> bytearray:
    eth = bytes.fromhex("525500000202") + MAC + b"\x08\x00"
    ip = bytearray(bytes.fromhex("4500") + (20 + 20 + len(payload)).to_bytes(2, "big") + bytes.fromhex(
        "1234400040060000") + bytes([10, 0, 2, 15, 10, 0, 2, 2]))
    tcp = bytearray((40000).to_bytes(2, "big") + (80).to_bytes(2, "big") + (1000).to_bytes(4, "big")
                    + (0).to_bytes(4, "big") + bytes([0x50, 0x18]) + (65535).to_bytes(2, "big") + bytes(4))
    length = 0 if pseudo_no_length else 20 + len(payload)
    pseudo = ones_sum(bytes(ip[12:20]) + bytes([0, 6]) + length.to_bytes(2, "big"))
    tcp[16:18] = pseudo.to_bytes(2, "big")
    return bytearray(eth + ip + tcp + payload)


def checksum_ok(data: bytes) -> bool:
    return ones_sum(data) == 0          # a correct checksum makes the sum -0 (0 mod 0xFFFF)


def context(ipcss=14, ipcso=24, ipcse=33, tucss=34, tucso=50, tucse=0, tucmd=0x03, paylen=0, hdr=0, mss=0):
    low = ipcss | ipcso << 8 | ipcse << 16
    up = tucss | tucso << 8 | tucse << 16
    return low | up << 32, paylen | 0x0 << 20 | (tucmd | 0x20) << 24, hdr << 8 | mss << 16


def test_checksum_offload_and_tso_give_valid_segments(card):
    memory = card.memory_
    setup_tx(card)
    payload = bytes((i * 7) & 0xFF for i in range(3000))
    packet = ipv4_tcp_packet(payload, pseudo_no_length=True)
    memory.write(BUFFERS, bytes(packet))
    addr, lower, upper = context(tucmd=0x01 | 0x02 | 0x04, paylen=len(payload), hdr=54, mss=1000)
    memory.write(TX_RING, addr.to_bytes(8, "little") + lower.to_bytes(4, "little") + upper.to_bytes(4, "little"))
    # two data descriptors: headers, then the payload; TSE, IXSM and TXSM
    dcmd = 0x20 | 0x04 | 0x08
    put_descriptor(memory, 1, BUFFERS, 54 | 1 << 20 | dcmd << 24, 0x03 << 8)
    put_descriptor(memory, 2, BUFFERS + 54, len(payload) | 1 << 20 | (dcmd | 0x01) << 24, 0x03 << 8)
    card.write_register(r.TDT, 3)
    assert len(card.sent) == 3
    sequence = 1000
    for index, frame in enumerate(card.sent):
        ip, tcp = frame[14:34], frame[34:]
        assert int.from_bytes(ip[2:4], "big") == len(frame) - 14
        assert int.from_bytes(ip[4:6], "big") == 0x1234 + index
        assert checksum_ok(ip)
        pseudo = ip[12:20] + bytes([0, 6]) + len(tcp).to_bytes(2, "big")
        assert checksum_ok(pseudo + tcp)
        assert int.from_bytes(tcp[4:8], "big") == sequence
        sequence += len(tcp) - 20
        assert bool(tcp[13] & 0x08) == (index == 2)        # PSH only on the last segment
    assert b"".join(f[54:] for f in card.sent) == payload


def setup_rx(nic, count=8, rctl=r.RCTL_EN | r.RCTL_BAM):
    for i in range(count):
        put_descriptor(nic.memory_, i, BUFFERS + i * 2048, 0, ring=RX_RING)
    nic.write_register(r.RDBAL, RX_RING)
    nic.write_register(r.RDLEN, count * 16)
    nic.write_register(r.RDH, 0)
    nic.write_register(r.RDT, count - 1)
    nic.write_register(r.RCTL, rctl)
    nic.write_register(r.IMS, r.ICR_RXT0)


def test_receive_fills_buffers_filters_and_stops_when_full(card):
    setup_rx(card)
    to_us = MAC + bytes.fromhex("525500000202") + b"\x08\x00" + bytes(range(100))
    assert card.receive(to_us)
    memory = card.memory_.data
    length = int.from_bytes(memory[RX_RING + 8:RX_RING + 10], "little")
    assert length == len(to_us) + 4                     # with the FCS (SECRC off)
    assert bytes(memory[BUFFERS:BUFFERS + len(to_us)]) == to_us
    assert memory[BUFFERS + len(to_us):BUFFERS + length] == zlib.crc32(to_us).to_bytes(4, "little")
    assert memory[RX_RING + 12] & 0x03 == 0x03          # DD and EOP
    assert card.irq[-1] is True
    other = bytes.fromhex("080027000001") + to_us[6:]
    assert card.receive(other) and card.read_register(r.RDH) == 1      # filtered out
    broadcast = b"\xff" * 6 + to_us[6:]
    for _ in range(6):
        assert card.receive(broadcast)
    assert not card.receive(broadcast)                  # the ring is full: kept by the caller
    assert card.read_register(r.RDH) == 7


def test_garbage_descriptors_do_not_crash(card):
    setup_tx(card)
    put_descriptor(card.memory_, 0, 0xFFFFFFFFFFF0, 0xFFFF | 0x01 << 24)
    put_descriptor(card.memory_, 1, 0, 0xFFFFF | 0x2F << 24 | 0x5 << 20)
    card.write_register(r.TDT, 2)
    card.write_register(r.TDT, 200)                     # past the ring: ignored
    card.write_register(r.RDBAL, 0xFFFFFF00)
    card.write_register(r.RDLEN, 128)
    card.write_register(r.RDT, 3)
    card.write_register(r.RCTL, r.RCTL_EN | r.RCTL_UPE)
    card.receive(b"\x00" * 64)
    assert card.read_register(r.TDH) in (0, 2)


def test_reset_and_snapshot_round_trip(card):
    setup_tx(card)
    state = card.snapshot()
    other = E1000("82540EM", MAC, Memory(), transmit=lambda f: None, set_irq=lambda level: None)
    other.restore(state)
    assert other.read_register(r.TDLEN) == 128
    card.write_register(r.CTRL, r.CTRL_RST)
    assert card.read_register(r.TDLEN) == 0 and card.read_register(r.RA + 4) & r.RAH_AV
    with pytest.raises(ValueError):
        E1000("82545EM", MAC, Memory(), transmit=lambda f: None, set_irq=lambda level: None).restore(state)
    moved = E1000("82540EM", bytes(6), Memory(), transmit=lambda f: None, set_irq=lambda level: None)
    moved.restore(state)                      # another MAC is allowed: the guest keeps the saved one
    assert moved.read_register(r.RA) == int.from_bytes(MAC[:4], "little")


def mdio_frame(nic, bits):
    """e1000_shift_out_mdi_bits: MDIO as an output, each bit with a clock pulse."""
    from services.hw.net.e1000.mdio import MDC, MDIO, MDIO_OUTPUT
    for bit in bits:
        ctrl = MDIO_OUTPUT | (MDIO if bit else 0)
        card_ctrl(nic, ctrl)
        card_ctrl(nic, ctrl | MDC)
        card_ctrl(nic, ctrl)


def card_ctrl(nic, value):
    nic.write_register(r.CTRL, value)


def mdio_read(nic, register, phy=1):
    """e1000_read_phy_reg_ex on an 82543: preamble, 14 header bits, then 17 clocked input bits."""
    from services.hw.net.e1000.mdio import MDC, MDIO
    mdio_frame(nic, [1] * 32)
    header = register | phy << 5 | 0b10 << 10 | 0b01 << 12
    mdio_frame(nic, [header >> (13 - i) & 1 for i in range(14)])
    card_ctrl(nic, 0)                                   # MDIO becomes an input
    card_ctrl(nic, MDC)
    card_ctrl(nic, 0)                                   # turnaround
    value = 0
    for _ in range(16):
        card_ctrl(nic, MDC)
        value = value << 1 | bool(nic.read_register(r.CTRL) & MDIO)
        card_ctrl(nic, 0)
    card_ctrl(nic, MDC)
    card_ctrl(nic, 0)
    return value


def test_82543_reaches_its_phy_through_bit_banged_mdio():
    nic = E1000("82543GC", MAC, Memory(), transmit=lambda f: None, set_irq=lambda level: None)
    assert mdio_read(nic, 2) == 0x0141 and mdio_read(nic, 3) == 0x0C50
    assert mdio_read(nic, 1) & 0x0004                   # link up
    assert mdio_read(nic, 2, phy=3) == 0xFFFF           # nobody at another address
    nic.set_link(False)
    assert not mdio_read(nic, 1) & 0x0004
    # a write: preamble, then 01 01 PHY REG 10 DATA
    mdio_frame(nic, [1] * 32)
    frame = 0x0DE1 | 0b10 << 16 | 4 << 18 | 1 << 23 | 0b01 << 28 | 0b01 << 30
    mdio_frame(nic, [frame >> (31 - i) & 1 for i in range(32)])
    assert mdio_read(nic, 4) == 0x0DE1
