"""The PCnet register file behind both BARs (address PROM, RAP/RDP/BDP in word or double-word I/O, CSR0's
init/start/stop machine and interrupt); frames leave through `transmit` and arrive through receive()."""

from __future__ import annotations

import logging
import struct
from typing import Callable

from services.hw.net.pcnet import descriptors
from services.hw.net.pcnet import registers as r
from services.hw.net.pcnet import transmit as tx
from services.hw.net.pcnet.bus_configuration import BusConfiguration
from services.hw.net.pcnet.ethernet import FCS_SIZE, MIN_FRAME, fits_the_wire
from services.hw.net.pcnet.guest_errors import GuestErrors
from services.hw.net.pcnet.init_block import read_init_block
from services.hw.net.pcnet.mii import Am79C874Phy
from services.hw.net.pcnet.receive import (
    BUFFER_NOT_RAM,
    NO_BUFFER,
    RING_NOT_RAM,
    address_match,
    as_received,
    claim_buffers,
    store_frame,
)
from services.hw.net.pcnet.registers import CHIPS
from services.hw.net.saved import check_saved_card

__all__ = ["CHIPS", "PcNet"]

_THREE_WORDS = struct.Struct("<3H")
# CSRs that show a ring's place, for "alternative initialization" without an init block
_RING_REGISTERS = {
    number: (ring, part) for ring, numbers in (("rx", (r.BADR_LOW, r.BADR_HIGH, r.RCVRL, r.RCVRC)),
                                               ("tx", (r.BADX_LOW, r.BADX_HIGH, r.XMTRL, r.XMTRC)))
    for number, part in zip(numbers, descriptors.RING_REGISTER_PARTS)}


def address_prom(mac: bytes) -> bytes:
    """MAC, PCI bus type (0x11) at 9, the checksum of all 16 bytes at 12, NE2100's 'WW' at 14."""
    prom = bytearray(mac + bytes(10))
    prom[9] = 0x11
    prom[14:16] = b"WW"
    prom[12:14] = (sum(prom) & 0xFFFF).to_bytes(2, "little")
    return bytes(prom)


class PcNet:
    def __init__(self, chip: str, mac: bytes, memory, *, transmit: Callable[[bytes], None],
                 set_irq: Callable[[bool], None], on_dma_write: Callable[[int, int], None] | None = None,
                 link_up: bool = True, on_receive_space: Callable[[], None] | None = None):
        if chip not in CHIPS:
            raise ValueError(f"unknown PCnet chip '{chip}' (expected {', '.join(CHIPS)})")
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        self.chip, self.model, self.mac, self.memory = chip, CHIPS[chip], bytes(mac), memory
        self.transmit, self.set_irq = transmit, set_irq
        self.on_dma_write = on_dma_write or (lambda gpa, length: None)
        self.on_receive_space = on_receive_space or (lambda: None)   # the driver may have new buffers
        self.phy = Am79C874Phy(link_up)
        self.rx, self.tx = descriptors.Ring(), descriptors.Ring()
        self.errors = GuestErrors()
        self.bus = BusConfiguration(self.model, self.phy, self.errors)
        self.irq_level = False
        self.reset()

    # -- power-on (H_RESET) and software reset (S_RESET) ------------------------------------
    def reset(self) -> None:
        self.prom = bytearray(address_prom(self.mac))
        self.bus.reset()
        self.csr = [0] * r.CSR_COUNT
        self.phy.reset()
        self.receive_waiting = False     # a receive() was refused: call on_receive_space when that may change
        self.miss_reported = False       # MISS was counted for the current lack of buffers
        self._soft_reset()

    def _soft_reset(self) -> None:
        """What reading the RESET port does: stopped, rings forgotten, PADR reloaded from the PROM.
        BCRs (DWIO and SWSTYLE among them) survive it."""
        csr = self.csr
        for number, value in r.CSR_SOFT_RESET.items():
            csr[number] = value
        csr[r.PADR:r.PADR + 3] = _THREE_WORDS.unpack(self.prom[:6])
        csr[r.MODE] &= r.CSR15_KEPT_BY_SOFT_RESET
        csr[r.PART_ID_LOW], csr[r.PART_ID_HIGH] = self.model.part_id_low, self.model.part_id_high
        self.rap = 0
        self.rx.clear()
        self.tx.clear()
        self._sync_ring_layout()
        self._sync_filter()
        self._update_irq()

    # -- link --------------------------------------------------------------------------------
    @property
    def link_up(self) -> bool:
        return self.phy.link_up

    def set_link(self, up: bool) -> None:
        """The cable plugged in or pulled; pcnet32 notices through the PHY's BMSR on its watchdog."""
        self.phy.set_link(up)

    # -- the BARs: 16 bytes of address PROM, then the register ports ---------------------------
    def io_read(self, offset: int, size: int) -> int:
        offset &= r.IO_SIZE - 1
        if offset < r.APROM_SIZE:
            prom = self.prom
            return int.from_bytes(bytes(prom[(offset + i) & 0xF] for i in range(size)), "little")
        return self._port_read(offset - r.APROM_SIZE, size)

    def io_write(self, offset: int, size: int, value: int) -> None:
        offset &= r.IO_SIZE - 1
        if offset >= r.APROM_SIZE:
            self._port_write(offset - r.APROM_SIZE, size, value)
        elif self.bus.registers[r.MC] & r.APROMWE:
            for i in range(size):
                self.prom[(offset + i) & 0xF] = (value >> (8 * i)) & 0xFF

    read, write = io_read, io_write        # the memory BAR maps the same 32 bytes

    def _port_read(self, port: int, size: int) -> int:
        if self.bus.registers[r.BSBC] & r.DWIO:
            if size == 4:
                if port == r.DWIO_RDP:
                    return self._csr_read(self.rap)
                if port == r.DWIO_RAP:
                    return self.rap
                if port == r.DWIO_RESET:
                    self._soft_reset()
                    return 0
                if port == r.DWIO_BDP:
                    return self.bus.read(self.rap)
        elif size == 2:
            if port == r.WIO_RDP:
                return self._csr_read(self.rap)
            if port == r.WIO_RAP:
                return self.rap
            if port == r.WIO_RESET:
                self._soft_reset()
                return 0
            if port == r.WIO_BDP:
                return self.bus.read(self.rap)
        elif size == 1 and port == r.WIO_RESET:
            self._soft_reset()
            return 0
        return (1 << (8 * size)) - 1           # the wrong width for the mode: nothing answers

    def _port_write(self, port: int, size: int, value: int) -> None:
        if self.bus.registers[r.BSBC] & r.DWIO:
            if size == 4:
                if port == r.DWIO_RDP:
                    self._csr_write(self.rap, value & 0xFFFF)
                elif port == r.DWIO_RAP:
                    self.rap = value & r.RAP_MASK
                elif port == r.DWIO_BDP:
                    self._bcr_write(self.rap, value & 0xFFFF)
        elif size == 2:
            if port == r.WIO_RDP:
                self._csr_write(self.rap, value & 0xFFFF)
            elif port == r.WIO_RAP:
                self.rap = value & r.RAP_MASK
            elif port == r.WIO_BDP:
                self._bcr_write(self.rap, value & 0xFFFF)
        elif size == 4 and port == r.WIO_RDP:
            self.bus.registers[r.BSBC] |= r.DWIO          # how a driver selects DWIO; the data itself is lost

    # -- CSRs --------------------------------------------------------------------------------
    def _csr_read(self, number: int) -> int:
        csr = self.csr
        if number == 0:
            value = csr[0]
            return value | r.ERR if value & r.CSR0_ERROR_SOURCES else value
        if number in (16, 17):                  # aliases of IADR
            number -= 15
        if number == r.SWSTYLE_ALIAS:
            return self.bus.registers[r.SWS]
        if number in _RING_REGISTERS:
            ring, part = _RING_REGISTERS[number]
            return getattr(self, ring).read_register(part)
        return csr[number]

    def _csr_write(self, number: int, value: int) -> None:
        if number == 0:
            self._csr0_write(value)
            return
        csr = self.csr
        if number in (16, 17):
            number -= 15
        if number in r.CSRS_WRITABLE_WHEN_STOPPED and not (csr[0] & r.STOP or csr[5] & r.SPND):
            self.errors.report("csr-running", "CSR%d written while the chip runs: ignored", number)
            return
        if number == 3:
            csr[3] = value & r.CSR3_WRITABLE
        elif number == 4:
            value = (value & ~r.CSR4_WRITE_ONE_TO_CLEAR) | (csr[4] & ~value & r.CSR4_WRITE_ONE_TO_CLEAR)
            if value & r.UINTCMD:
                value = (value & ~r.UINTCMD) | r.UINT        # the driver asks for an interrupt
            csr[4] = value
        elif number == 5:
            was_suspended = csr[5] & r.SPND
            csr[5] = (value & ~r.CSR5_WRITE_ONE_TO_CLEAR) | (csr[5] & ~value & r.CSR5_WRITE_ONE_TO_CLEAR)
            if was_suspended and not value & r.SPND:
                self._poll_transmit()
                self._offer_receive_space()
        elif number == r.SWSTYLE_ALIAS:
            self._bcr_write(r.SWS, value)
        elif number in _RING_REGISTERS:
            ring, part = _RING_REGISTERS[number]
            getattr(self, ring).write_register(part, value)
        elif number not in r.CSRS_READ_ONLY:
            csr[number] = value
            if number == r.IADR_HIGH:
                self._sync_ring_layout()
            elif r.LADRF <= number < r.PADR + 3:
                self._sync_filter()
        self._update_irq()

    def _csr0_write(self, value: int) -> None:
        csr = self.csr
        state = csr[0] & ~(value & r.CSR0_WRITE_ONE_TO_CLEAR)
        csr[0] = (state & ~r.IENA) | (value & (r.IENA | r.TDMD))
        if value & (r.STOP | r.STRT | r.INIT) == r.STOP | r.STRT | r.INIT:
            value &= ~(r.STRT | r.INIT)         # all three: STOP wins
        if value & r.STOP and not csr[0] & r.STOP:
            self._stop()
        if value & r.INIT and not csr[0] & r.INIT:
            self._initialize()
        started = value & r.STRT and not csr[0] & r.STRT
        if started:
            self._start()
        if csr[0] & r.TDMD or started:
            self._poll_transmit()
        self._update_irq()
        self._offer_receive_space()            # acknowledging RINT/MISS usually follows refilling the ring

    def _stop(self) -> None:
        csr = self.csr
        csr[0] = r.STOP
        csr[4] &= ~(r.MFCO | r.UINTCMD | r.UINT | r.JAB)
        csr[5] &= ~(r.SPND | r.MPINT)

    def _initialize(self) -> None:
        csr, ssize32 = self.csr, self.bus.ssize32
        address = csr[r.IADR_LOW] | csr[r.IADR_HIGH] << 16
        try:
            block = read_init_block(self.memory, address, ssize32, 0 if ssize32 else (csr[r.IADR_HIGH] & 0xFF00) << 16)
        except ValueError:
            self.errors.report("init-block", "initialization block at %#x is not guest RAM", address)
            csr[0] |= r.MERR | r.INIT
            return
        csr[r.MODE] = block.mode
        csr[r.LADRF:r.LADRF + 4] = struct.unpack("<4H", block.multicast_filter.to_bytes(8, "little"))
        csr[r.PADR:r.PADR + 3] = _THREE_WORDS.unpack(block.mac)
        csr[r.CSR_LENGTHS] = block.tx_log2 << 12 | block.rx_log2 << 8
        for ring, base, log2 in ((self.rx, block.rx_base, block.rx_log2), (self.tx, block.tx_base, block.tx_log2)):
            ring.base, ring.count, ring.index = base, 1 << log2, 0
        self._sync_ring_layout()
        self._sync_filter()
        csr[0] = (csr[0] | r.IDON | r.INIT) & ~r.STOP

    def _start(self) -> None:
        csr = self.csr
        mode = csr[r.MODE]
        csr[0] = ((csr[0] & ~r.STOP) | r.STRT | (0 if mode & r.DTX else r.TXON) | (0 if mode & r.DRX else r.RXON))

    def _sync_ring_layout(self) -> None:
        style = self.bus.style
        upper = 0 if self.bus.ssize32 else (self.csr[r.IADR_HIGH] & 0xFF00) << 16
        for ring in (self.rx, self.tx):
            ring.style, ring.upper = style, upper

    def _sync_filter(self) -> None:
        csr = self.csr
        self.station = _THREE_WORDS.pack(*csr[r.PADR:r.PADR + 3])
        self.multicast_filter = csr[8] | csr[9] << 16 | csr[10] << 32 | csr[11] << 48

    # -- interrupts --------------------------------------------------------------------------
    def _update_irq(self) -> None:
        csr = self.csr
        state, events = csr[0], csr[4]
        pending = ((state & ~csr[3] & r.CSR0_INTERRUPT_SOURCES)
                   or ((events >> 1) & ~events & (r.CSR4_EVENTS_WITH_MASKS >> 1)) or events & r.UINT)
        csr[0] = state | r.INTR if pending else state & ~r.INTR
        level = bool(pending) and bool(state & r.IENA)
        if level != self.irq_level:
            self.irq_level = level
            self.set_irq(level)

    def _bcr_write(self, number: int, value: int) -> None:
        csr = self.csr
        if self.bus.write(number, value, stopped=bool(csr[0] & r.STOP or csr[5] & r.SPND)):
            self._sync_ring_layout()

    # -- transmit ----------------------------------------------------------------------------
    def _poll_transmit(self) -> None:
        csr = self.csr
        csr[0] &= ~r.TDMD
        if not csr[0] & r.TXON or csr[5] & r.SPND:
            return
        loopback = bool(csr[r.MODE] & r.LOOP)
        outcome = tx.transmit_ring(self.tx, self.memory, self._deliver if loopback else self.transmit,
                                   self.on_dma_write, self.errors, carrier=loopback or self.phy.carrier,
                                   interrupt_on_success=self._interrupt_on_success)
        if not outcome:
            return
        if outcome & tx.STARTED:
            csr[4] |= r.TXSTRT
        if outcome & tx.INTERRUPT:
            csr[0] |= r.TINT
        if outcome & tx.CARRIER_LOST:
            csr[0] |= r.CERR
        if outcome & tx.MEMORY_ERROR:
            csr[0] |= r.MERR
        if outcome & tx.UNDERFLOW and not csr[3] & r.DXSUFLO:
            csr[0] &= ~r.TXON
        self._update_irq()

    def _interrupt_on_success(self, status: int) -> bool:
        csr5 = self.csr[5]
        return not csr5 & r.TOKINTD or bool(csr5 & r.LTINTEN and status & r.TX_LTINT)

    # -- receive -----------------------------------------------------------------------------
    def can_receive(self, length: int = 1518) -> bool:
        """Whether a frame of `length` bytes fits in the buffers the driver has handed over."""
        csr = self.csr
        if not csr[0] & r.RXON or csr[5] & r.SPND or not self.phy.carrier:
            return False
        try:
            return claim_buffers(self.rx, self.memory, max(length, MIN_FRAME) + FCS_SIZE) is not None
        except ValueError:
            return False

    def receive(self, frame: bytes) -> bool:
        """A frame from the wire into the driver's buffers. False: no buffer now (the caller keeps
        it and offers it again after on_receive_space); True: stored, filtered out or dropped."""
        if not fits_the_wire(frame):
            return True                         # not a frame the wire could carry: dropped
        if not self.phy.carrier:
            return True                         # the cable is out: nothing arrives
        return self._deliver(frame)

    def _deliver(self, frame: bytes) -> bool:
        csr = self.csr
        if not csr[0] & r.RXON or csr[5] & r.SPND:
            self.receive_waiting = True
            return False
        match = address_match(frame[:6], csr[r.MODE], self.station, self.multicast_filter)
        if match is None:
            return True
        data = as_received(frame, bool(csr[4] & r.ASTRP_RCV))
        outcome = store_frame(self.rx, self.memory, data, match, self.on_dma_write, self.errors)
        if outcome == NO_BUFFER:
            self.receive_waiting = True
            if not self.miss_reported:          # once per shortage, however often the frame is offered
                self.miss_reported = True
                self._count_missed_frame()
                self._update_irq()
            return False
        self.miss_reported = False
        if outcome == RING_NOT_RAM:
            csr[0] |= r.MERR                    # the frame is lost; no descriptor came back
        else:                                   # stored, or handed back with its errors
            csr[0] |= r.RINT | (r.MERR if outcome == BUFFER_NOT_RAM else 0)
        self._update_irq()
        return True

    def _count_missed_frame(self) -> None:
        csr = self.csr
        csr[0] |= r.MISS
        csr[r.MISSED_FRAMES] = (csr[r.MISSED_FRAMES] + 1) & 0xFFFF
        if not csr[r.MISSED_FRAMES]:
            csr[4] |= r.MFCO

    def _offer_receive_space(self) -> None:
        csr = self.csr
        if self.receive_waiting and csr[0] & r.RXON and not csr[5] & r.SPND:
            self.receive_waiting = False
            self.on_receive_space()

    # -- state -------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"chip": self.chip, "mac": self.mac, "prom": bytes(self.prom), "csr": list(self.csr),
                "bcr": self.bus.snapshot(), "rap": self.rap, "rx": self.rx.snapshot(), "tx": self.tx.snapshot(),
                "phy": self.phy.snapshot(), "receive_waiting": self.receive_waiting,
                "miss_reported": self.miss_reported}

    def restore(self, state: dict) -> None:
        check_saved_card(state, self.chip, self.mac, logging.getLogger("headbox.hw.pcnet"))
        prom, csr = bytes(state["prom"]), list(state["csr"])
        if len(prom) != r.APROM_SIZE or len(csr) != r.CSR_COUNT:
            raise ValueError("the saved PCnet state has the wrong number of registers")
        self.prom = bytearray(prom)
        self.csr = [int(v) & 0xFFFF for v in csr]
        self.bus.restore(list(state["bcr"]))
        self.rap = int(state["rap"]) & r.RAP_MASK
        self.rx.restore(state["rx"])
        self.tx.restore(state["tx"])
        self.phy.restore(state["phy"])
        self.receive_waiting = bool(state["receive_waiting"])
        self.miss_reported = bool(state["miss_reported"])
        self._sync_ring_layout()
        self._sync_filter()
        self.irq_level = None                   # tell the interrupt line either way
        self._update_irq()
