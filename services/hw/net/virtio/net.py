"""The virtio network card (VirtualBox's --nictype virtio): queue 0 receives, queue 1 transmits, the
config holds MAC and link status; frames leave through `transmit(frame)` and arrive by receive(frame)."""

from __future__ import annotations

import logging
from typing import Callable

from services.hw.net.saved import check_saved_card
from services.hw.net.virtio.offload import OffloadError, finish, needs_work
from services.hw.net.virtio.transport import (
    F_ANY_LAYOUT,
    F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC,
    LegacyVirtioDevice,
)
from services.hw.net.virtio.virtqueue import Chain, Segments

CHIPS = ("virtio",)
RX, TX = 0, 1
QUEUE_SIZE = 256                    # what QEMU and VirtualBox give each queue; legacy drivers take it

F_CSUM, F_MAC, F_HOST_TSO4, F_HOST_TSO6, F_MRG_RXBUF, F_STATUS = 0, 5, 11, 12, 15, 16
OFFERED = sum(1 << bit for bit in (F_CSUM, F_MAC, F_HOST_TSO4, F_HOST_TSO6, F_MRG_RXBUF, F_STATUS,
                                   F_ANY_LAYOUT, F_RING_INDIRECT_DESC, F_RING_EVENT_IDX))
S_LINK_UP = 0x1
HEADER_LENGTH, MERGEABLE_HEADER_LENGTH = 10, 12    # virtio_net_hdr, and with num_buffers
ETHERNET_HEADER = 14
MAX_FRAME = 65535 + 18              # the largest IP packet behind an Ethernet header and a VLAN tag


class VirtioNet(LegacyVirtioDevice):
    def __init__(self, chip: str, mac: bytes, memory, *, transmit: Callable[[bytes], None],
                 set_irq: Callable[[bool], None], on_dma_write: Callable[[int, int], None] | None = None,
                 link_up: bool = True, on_receive_space: Callable[[], None] | None = None):
        if chip not in CHIPS:
            raise ValueError(f"unknown virtio network chip '{chip}' (expected {', '.join(CHIPS)})")
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        self.chip, self.mac, self.memory = chip, bytes(mac), memory
        self.transmit = transmit
        self.on_dma_write = on_dma_write or (lambda gpa, length: None)
        self.on_receive_space = on_receive_space or (lambda: None)   # the driver posted buffers
        self._link_up = bool(link_up)
        super().__init__(memory, OFFERED, [("receive", QUEUE_SIZE), ("transmit", QUEUE_SIZE)],
                         set_irq, self.on_dma_write)
        self.rx, self.tx = self.queues
        self.reset()

    # -- power-on and reset ------------------------------------------------------------------
    def reset(self) -> None:
        self.config_mac = bytearray(self.mac)
        self.reset_transport()

    def features_changed(self) -> None:
        self.mergeable = self.has_feature(F_MRG_RXBUF)
        self.header_length = MERGEABLE_HEADER_LENGTH if self.mergeable else HEADER_LENGTH
        self.receive_header = bytes(HEADER_LENGTH)      # no offloads to the guest: all zero

    def driver_ready(self) -> None:
        self.on_receive_space()     # a driver may post receive buffers before DRIVER_OK

    # -- config: MAC and link ------------------------------------------------------------------
    def config_bytes(self) -> bytes:
        return bytes(self.config_mac) + (S_LINK_UP if self._link_up else 0).to_bytes(2, "little")

    def write_config(self, offset: int, data: bytes) -> None:
        # A legacy driver without CTRL_MAC_ADDR changes the address by writing it here.
        for at, byte in enumerate(data, offset):
            if at < 6:
                self.config_mac[at] = byte

    @property
    def link_up(self) -> bool:
        return self._link_up

    def set_link(self, up: bool) -> None:
        """The cable plugged in or pulled: the config status follows, the driver hears of it."""
        if bool(up) != self._link_up:
            self._link_up = bool(up)
            self.interrupt_config()

    # -- transmit ----------------------------------------------------------------------------
    def queue_notified(self, index: int) -> None:
        if index == TX:
            self._run_transmit()
        else:
            self.on_receive_space()

    def _run_transmit(self) -> None:
        queue = self.tx
        if not self.driver_ok or not queue.ready:
            return
        first = queue.used_idx
        while True:
            chain = queue.pop()
            while chain is not None:
                self._send(chain[1])
                queue.put(chain[0], 0)
                chain = queue.pop()
            if not (self.event_idx and queue.ask_for_notify()):
                break
        if queue.used_idx != first and queue.publish(self.event_idx):
            self.interrupt_queue()

    def _send(self, segments: Segments) -> None:
        header_length = self.header_length
        total = sum(length for _, length in segments)
        if total > header_length + MAX_FRAME or total < header_length + ETHERNET_HEADER:
            self.complaints.say("tx-size", "transmit packet of %d bytes with its header dropped", total)
            return
        if not self._link_up:
            return                                  # no cable: the frame goes nowhere
        try:
            header, frame = self._gather(segments, header_length)
        except ValueError:
            self.complaints.say("tx-ram", "transmit buffer is not guest RAM: packet dropped")
            return
        if not needs_work(header):
            self.transmit(frame)
            return
        try:
            frames = finish(header, frame)
        except OffloadError as error:
            self.complaints.say("tx-offload", "transmit packet dropped: %s", error)
            return
        for piece in frames:
            if len(piece) >= ETHERNET_HEADER:
                self.transmit(piece)

    def _gather(self, segments: Segments, header_length: int) -> tuple[bytes, bytes]:
        """The header and the frame behind it, read straight from the buffers (the header may
        share a buffer with the frame: ANY_LAYOUT)."""
        read = self.memory.read
        header_parts, frame_parts = [], []
        skip = header_length
        for address, length in segments:
            if skip:
                take = min(skip, length)
                header_parts.append(read(address, take))
                skip -= take
                if take == length:
                    continue
                address, length = address + take, length - take
            frame_parts.append(read(address, length))
        return b"".join(header_parts), b"".join(frame_parts)

    # -- receive -----------------------------------------------------------------------------
    def can_receive(self, length: int = 1518) -> bool:
        """Whether a frame of `length` bytes fits in the buffers the driver has given the card."""
        if not self._link_up or not self.driver_ok or not self.rx.ready:
            return False
        mark = self.rx.last_avail
        chains = self._take_buffers(self.header_length + length)
        self.rx.rewind(mark)
        return bool(chains)

    def receive(self, frame: bytes) -> bool:
        """A frame from the wire into the driver's buffers. False: no buffers for it now; the
        caller keeps it and offers it again after the driver posts buffers."""
        if len(frame) < ETHERNET_HEADER:
            return True                             # consumed: a real card drops runts silently
        if not self._link_up or not self.driver_ok:
            return False
        queue = self.rx
        chains = self._take_buffers(self.header_length + len(frame))
        if chains is None:
            return False
        if not chains:
            return True                             # too big for any buffer: dropped
        if self.mergeable:
            data = self.receive_header + len(chains).to_bytes(2, "little") + frame
        else:
            data = self.receive_header + frame
        write, note = self.memory.write, self.on_dma_write
        lengths = []
        offset = 0
        try:
            for _, _, writable in chains:
                start = offset
                for address, length in writable:
                    piece = data[offset:offset + length]
                    if not piece:
                        break
                    write(address, piece)
                    note(address, len(piece))
                    offset += len(piece)
                lengths.append(offset - start)
        except ValueError:
            # The driver frees a buffer returned with nothing in it, so the frame alone is lost.
            self.complaints.say("rx-ram", "receive buffer is not guest RAM: frame dropped")
            lengths = [0] * len(chains)
        for (head, _, _), length in zip(chains, lengths):
            queue.put(head, length)
        if queue.publish(self.event_idx):
            self.interrupt_queue()
        return True

    def _take_buffers(self, needed: int) -> list[Chain] | None:
        """Receive chains with room for `needed` bytes, taken from the queue. None: not enough
        posted yet (nothing taken); []: the frame can never fit (nothing taken)."""
        queue = self.rx
        mark = queue.last_avail
        chains: list[Chain] = []
        room = 0
        while room < needed:
            chain = queue.pop()
            if chain is None:
                queue.rewind(mark)
                if self.event_idx and queue.ask_for_notify():
                    chains, room = [], 0        # buffers came while the device looked: again
                    continue
                return None
            chains.append(chain)
            room += sum(length for _, length in chain[2])
            if not self.mergeable or len(chains) == queue.size:
                break
        if room < needed:
            queue.rewind(mark)
            self.complaints.say("rx-size", "frame of %d bytes with its header dropped: the driver's "
                                "receive buffers hold %d", needed, room)
            return []
        return chains

    # -- state -------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"chip": self.chip, "mac": self.mac, "config_mac": bytes(self.config_mac),
                "link_up": self._link_up, "transport": self.snapshot_transport()}

    def restore(self, state: dict) -> None:
        check_saved_card(state, self.chip, self.mac, logging.getLogger("headbox.hw.virtio"))
        config_mac = bytes(state["config_mac"])
        if len(config_mac) != 6:
            raise ValueError("the saved network card's configured MAC is not 6 bytes")
        self.config_mac = bytearray(config_mac)
        self._link_up = bool(state["link_up"])
        self.restore_transport(state["transport"])
