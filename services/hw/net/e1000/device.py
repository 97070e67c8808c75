"""The 8254x register file: interrupts, link, EEPROM and PHY access, the receive ring, and the
transmit ring run when the driver moves its tail. Frames leave through `transmit(frame)` and
arrive through receive(frame); guest memory is reached through `memory` (read/write by address)."""

from __future__ import annotations

import logging
import zlib
from typing import Callable

from services.hw.net.e1000 import registers as r
from services.hw.net.e1000.eeprom import MicrowireEeprom, eeprom_image
from services.hw.net.e1000.mdio import BitBangMdio
from services.hw.net.e1000.phy import MDIC_INT, M88Phy
from services.hw.net.e1000.transmit import DESCRIPTOR, STATUS_DD, Transmitter
from services.hw.net.faults import GuestFaults
from services.hw.net.saved import check_saved_card

log = logging.getLogger("headbox.hw.e1000")

# chip -> (PCI device ID, subsystem vendor, subsystem ID), as VirtualBox presents them
CHIPS = {"82540EM": (0x100E, 0x8086, 0x001E), "82543GC": (0x1004, 0x8086, 0x1004),
         "82545EM": (0x100F, 0x15AD, 0x0750)}
MIN_FRAME = 60                  # without the FCS; shorter frames are padded, as on the wire
RX_STATUS_DD, RX_STATUS_EOP, RX_STATUS_IXSM = 0x01, 0x02, 0x04
_BUFFER_SIZES = {(False, 0): 2048, (False, 1): 1024, (False, 2): 512, (False, 3): 256,
                 (True, 1): 16384, (True, 2): 8192, (True, 3): 4096}
_READ_CLEAR_STATS = range(r.STATS_FIRST, r.STATS_LAST + 4, 4)


class E1000:
    def __init__(self, chip: str, mac: bytes, memory, *, transmit: Callable[[bytes], None],
                 set_irq: Callable[[bool], None], on_dma_write: Callable[[int, int], None] | None = None,
                 link_up: bool = True, on_receive_space: Callable[[], None] | None = None):
        if chip not in CHIPS:
            raise ValueError(f"unknown 8254x chip '{chip}' (expected {', '.join(CHIPS)})")
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        self.chip, self.mac, self.memory = chip, bytes(mac), memory
        self.transmit, self.set_irq = transmit, set_irq
        self.on_dma_write = on_dma_write or (lambda gpa, length: None)
        self.on_receive_space = on_receive_space or (lambda: None)   # the driver posted buffers
        device_id, subsystem_vendor, subsystem_id = CHIPS[chip]
        self.eeprom = MicrowireEeprom(eeprom_image(self.mac, device_id, subsystem_vendor, subsystem_id))
        self.phy = M88Phy(chip, link_up)
        # The 82543 has no MDIC: its driver reaches the PHY through CTRL's software pins.
        self.mdio = BitBangMdio(self.phy) if chip == "82543GC" else None
        self.fault = GuestFaults(log, f"e1000 {self.mac.hex(':')}")
        self.transmitter = Transmitter(self.fault)
        self.io_address = 0
        self.irq_level = False
        self.reset()

    # -- power-on and reset ------------------------------------------------------------------
    def reset(self) -> None:
        self.regs: dict[int, int] = {r.CTRL: 0x00000240 if self.chip != "82543GC" else 0x00000200,
                                     r.PBA: r.PBA_POWER_ON, r.LEDCTL: r.LEDCTL_POWER_ON,
                                     r.TXCW: r.TXCW_POWER_ON, r.VET: 0x8100}
        self.regs[r.RA] = int.from_bytes(self.mac[:4], "little")      # loaded from the EEPROM
        self.regs[r.RA + 4] = int.from_bytes(self.mac[4:], "little") | r.RAH_AV
        self.eeprom.reset()
        self.phy.reset()
        if self.mdio is not None:
            self.mdio.reset()
        self.transmitter.reset()
        self.io_address = 0
        self._update_irq()

    # -- link --------------------------------------------------------------------------------
    @property
    def link_up(self) -> bool:
        return self.phy.link_up

    def set_link(self, up: bool) -> None:
        """The cable plugged in or pulled: the PHY and STATUS follow, the driver hears LSC."""
        if up != self.phy.link_up:
            self.phy.set_link(up)
            self._raise(r.ICR_LSC)

    def _status(self) -> int:
        status = r.STATUS_FD | r.STATUS_SPEED_1000 | r.STATUS_ASDV_1000 | r.STATUS_MTXCKOK
        if self.phy.link_up:
            status |= r.STATUS_LU
        return status

    # -- interrupts --------------------------------------------------------------------------
    def _raise(self, causes: int) -> None:
        self.regs[r.ICR] = self.regs.get(r.ICR, 0) | causes
        self._update_irq()

    def _update_irq(self) -> None:
        level = bool(self.regs.get(r.ICR, 0) & self.regs.get(r.IMS, 0))
        if level != self.irq_level:
            self.irq_level = level
            self.set_irq(level)

    # -- register access (BAR0: memory, BAR2: IOADDR/IODATA) -----------------------------------
    def read(self, offset: int, size: int) -> int:
        aligned = offset & ~3
        value = self.read_register(aligned)
        shift = 8 * (offset - aligned)
        return (value >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        aligned = offset & ~3
        if size != 4 or offset != aligned:         # partial writes merge into the register
            shift = 8 * (offset - aligned)
            mask = ((1 << (8 * size)) - 1) << shift
            value = (self.regs.get(aligned, 0) & ~mask) | ((value << shift) & mask)
        self.write_register(aligned, value & 0xFFFFFFFF)

    def io_read(self, offset: int, size: int) -> int:
        if offset < 4:
            return self.io_address
        return self.read_register(self.io_address & 0x1FFFC)

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset < 4:
            self.io_address = value & 0x1FFFC
        else:
            self.write_register(self.io_address, value & 0xFFFFFFFF)

    def read_register(self, offset: int) -> int:
        regs = self.regs
        if offset == r.ICR:
            value = regs.get(r.ICR, 0)
            regs[r.ICR] = 0                        # read-to-clear
            self._update_irq()
            return value
        if offset == r.STATUS:
            return self._status()
        if offset == r.EECD:
            return self.eeprom.read_eecd()
        if offset == r.CTRL and self.mdio is not None:
            return self.mdio.pin_in(regs.get(r.CTRL, 0))
        if offset in (r.IMC, r.ICS):
            return 0
        if r.STATS_FIRST <= offset <= r.STATS_LAST:
            return regs.pop(offset, 0)
        return regs.get(offset, 0)

    def write_register(self, offset: int, value: int) -> None:
        regs = self.regs
        if offset == r.CTRL:
            if value & r.CTRL_RST:
                self.reset()
                return
            if value & r.CTRL_PHY_RST:
                self.phy.reset()
            regs[r.CTRL] = value & ~(r.CTRL_RST | r.CTRL_PHY_RST)
            if self.mdio is not None:
                self.mdio.write_ctrl(value)
        elif offset == r.EECD:
            self.eeprom.write_eecd(value)
        elif offset == r.EERD:
            regs[r.EERD] = self.eeprom.read_eerd(value)
        elif offset == r.MDIC:
            regs[r.MDIC] = self.phy.mdic(value)
            if value & MDIC_INT:
                self._raise(r.ICR_MDAC)
        elif offset == r.ICR:
            regs[r.ICR] = regs.get(r.ICR, 0) & ~value      # write-1-to-clear
            self._update_irq()
        elif offset == r.ICS:
            self._raise(value)
        elif offset == r.IMS:
            regs[r.IMS] = regs.get(r.IMS, 0) | value
            self._update_irq()
        elif offset == r.IMC:
            regs[r.IMS] = regs.get(r.IMS, 0) & ~value
            self._update_irq()
        elif offset in (r.RDLEN, r.TDLEN):
            regs[offset] = value & 0xFFF80            # a multiple of 128 bytes
        elif offset in (r.RDH, r.RDT, r.TDH, r.TDT):
            regs[offset] = value & 0xFFFF
            if offset == r.TDT:
                self._run_transmit()
            elif offset == r.RDT:
                self.on_receive_space()
        elif offset == r.TCTL:
            regs[r.TCTL] = value
            self._run_transmit()
        elif offset == r.RCTL:
            regs[r.RCTL] = value
            self.on_receive_space()
        elif offset == r.STATUS or r.STATS_FIRST <= offset <= r.STATS_LAST:
            pass                                    # read-only
        elif offset < r.MMIO_SIZE:
            regs[offset] = value

    # -- transmit ----------------------------------------------------------------------------
    def _ring(self, base_low: int, base_high: int, length: int) -> tuple[int, int]:
        regs = self.regs
        base = regs.get(base_low, 0) & ~0xF | regs.get(base_high, 0) << 32
        return base, regs.get(length, 0) // DESCRIPTOR

    def _run_transmit(self) -> None:
        regs = self.regs
        if not regs.get(r.TCTL, 0) & r.TCTL_EN:
            return
        base, count = self._ring(r.TDBAL, r.TDBAH, r.TDLEN)
        head, tail = regs.get(r.TDH, 0), regs.get(r.TDT, 0)
        if not count or head >= count or tail >= count:
            return                                  # a ring the driver has not set up (yet)
        vlan_enabled, vet = bool(regs.get(r.CTRL, 0) & r.CTRL_VME), regs.get(r.VET, 0x8100) & 0xFFFF
        sent = False
        while head != tail:
            address = base + head * DESCRIPTOR
            try:
                descriptor = self.memory.read(address, DESCRIPTOR)
            except ValueError:
                self.fault("ring address", "transmit ring at %#x is not guest RAM: transmit stopped", base)
                break
            frames, report = self.transmitter.process(descriptor, self.memory, vlan_enabled, vet)
            for frame in frames:
                self._count_transmit(frame)
                self.transmit(frame)
            if report:
                try:
                    self.memory.write(address + 12, bytes((descriptor[12] | STATUS_DD,)))
                    self.on_dma_write(address + 12, 1)
                except ValueError:
                    pass            # read a moment ago, so only a ring at RAM's very end gets here
            head = (head + 1) % count
            sent = True
        regs[r.TDH] = head
        if sent:
            self._raise(r.ICR_TXDW | r.ICR_TXQE)

    def _count_transmit(self, frame: bytes) -> None:
        regs, length = self.regs, len(frame) + 4
        for counter in (r.GPTC, r.TPT):
            regs[counter] = (regs.get(counter, 0) + 1) & 0xFFFFFFFF
        for counter in (r.GOTCL, r.TOTL):
            regs[counter] = (regs.get(counter, 0) + length) & 0xFFFFFFFF

    # -- receive -----------------------------------------------------------------------------
    def _buffer_size(self) -> int:
        rctl = self.regs.get(r.RCTL, 0)
        return _BUFFER_SIZES.get((bool(rctl & r.RCTL_BSEX), (rctl >> r.RCTL_BSIZE_SHIFT) & 3), 2048)

    def _free_descriptors(self) -> int:
        _, count = self._ring(r.RDBAL, r.RDBAH, r.RDLEN)
        head, tail = self.regs.get(r.RDH, 0), self.regs.get(r.RDT, 0)
        if not count or head >= count or tail >= count:
            return 0
        return (tail - head) % count

    def can_receive(self, length: int = 1518) -> bool:
        """Whether a frame of `length` bytes fits in the buffers the driver has given the card."""
        if not self.regs.get(r.RCTL, 0) & r.RCTL_EN or not self.phy.link_up:
            return False
        needed = -(-(max(length, MIN_FRAME) + 4) // self._buffer_size())
        return self._free_descriptors() >= needed

    def accepts(self, frame: bytes) -> bool:
        """The address filter: promiscuous, our addresses, broadcast, or the multicast table."""
        rctl, destination = self.regs.get(r.RCTL, 0), frame[:6]
        if rctl & r.RCTL_UPE:
            return True
        if destination[0] & 1:
            if destination == b"\xff" * 6:
                return bool(rctl & r.RCTL_BAM) or bool(rctl & r.RCTL_MPE)
            if rctl & r.RCTL_MPE:
                return True
            shift = (0, 1, 2, 4)[(rctl >> r.RCTL_MO_SHIFT) & 3]
            bit = ((destination[4] >> (4 - shift)) | (destination[5] << (4 + shift))) & 0xFFF
            return bool(self.regs.get(r.MTA + 4 * (bit >> 5), 0) >> (bit & 31) & 1)
        for entry in range(r.RA_ENTRIES):
            high = self.regs.get(r.RA + 8 * entry + 4, 0)
            if high & r.RAH_AV and destination == (
                    self.regs.get(r.RA + 8 * entry, 0).to_bytes(4, "little") + (high & 0xFFFF).to_bytes(2, "little")):
                return True
        return False

    def receive(self, frame: bytes) -> bool:
        """A frame from the wire into the driver's buffers. False: dropped (no room or not for
        us); the caller keeps it and offers it again after the driver posts buffers."""
        if len(frame) < 14 or not self.accepts(frame):
            return True                             # consumed: a real card drops it silently
        if not self.can_receive(len(frame)):
            if self.regs.get(r.RCTL, 0) & r.RCTL_EN and self.phy.link_up:
                self.regs[r.RNBC] = (self.regs.get(r.RNBC, 0) + 1) & 0xFFFFFFFF
            return False
        data = frame if len(frame) >= MIN_FRAME else frame + bytes(MIN_FRAME - len(frame))
        if not self.regs.get(r.RCTL, 0) & r.RCTL_SECRC:
            data = data + zlib.crc32(data).to_bytes(4, "little")
        base, count = self._ring(r.RDBAL, r.RDBAH, r.RDLEN)
        head, size = self.regs.get(r.RDH, 0), self._buffer_size()
        memory, written = self.memory, self.on_dma_write
        for start in range(0, len(data), size):
            piece = data[start:start + size]
            address = base + head * DESCRIPTOR
            last = start + size >= len(data)
            status = RX_STATUS_DD | RX_STATUS_IXSM | (RX_STATUS_EOP if last else 0)
            try:
                buffer = int.from_bytes(memory.read(address, 8), "little")
                if buffer:
                    memory.write(buffer, piece)
                    written(buffer, len(piece))
                memory.write(address + 8, len(piece).to_bytes(2, "little") + b"\0\0" + bytes((status, 0)) + b"\0\0")
                written(address + 8, 8)
            except ValueError:
                self.fault("receive address", "receive descriptor %d or its buffer is not guest RAM: "
                           "frame dropped", head)
            head = (head + 1) % count
        self.regs[r.RDH] = head
        self._count_receive(frame)
        causes = r.ICR_RXT0
        threshold = count >> (1 + ((self.regs.get(r.RCTL, 0) >> r.RCTL_RDMTS_SHIFT) & 3))
        if self._free_descriptors() <= threshold:
            causes |= r.ICR_RXDMT0
        self._raise(causes)
        return True

    def _count_receive(self, frame: bytes) -> None:
        regs, length = self.regs, len(frame) + 4
        counters = [r.GPRC, r.TPR]
        if frame[0] & 1:
            counters.append(r.BPRC if frame[:6] == b"\xff" * 6 else r.MPRC)
        for counter in counters:
            regs[counter] = (regs.get(counter, 0) + 1) & 0xFFFFFFFF
        for counter in (r.GORCL, r.TORL):
            regs[counter] = (regs.get(counter, 0) + length) & 0xFFFFFFFF

    # -- state -------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"chip": self.chip, "mac": self.mac, "regs": {str(k): v for k, v in self.regs.items()},
                "eeprom": self.eeprom.snapshot(), "phy": self.phy.snapshot(),
                "tx": self.transmitter.snapshot(), "io_address": self.io_address,
                "mdio": self.mdio.snapshot() if self.mdio is not None else None}

    def restore(self, state: dict) -> None:
        check_saved_card(state, self.chip, self.mac, log)
        self.regs = {int(k): int(v) for k, v in state["regs"].items()}
        self.eeprom.restore(state["eeprom"])
        self.phy.restore(state["phy"])
        self.transmitter.restore(state["tx"])
        self.io_address = int(state["io_address"])
        if self.mdio is not None and state.get("mdio"):
            self.mdio.restore(state["mdio"])
        self.irq_level = False
        self._update_irq()
