"""The VM's network cards, beside the vCPUs (the driver touches their registers on every
interrupt), and the card end of the net channel: transmitted frames go into the adapter's
`to_nat` ring with one doorbell per batch; frames in `to_guest` go into the driver's buffers
when a doorbell arrives or the driver posts buffers, whichever comes first."""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

from services.hw.net import e1000, pcnet, virtio
from services.ipc.frames import (
    MAX_FRAME,
    REGION_SIZE,
    Doorbell,
    DoorbellListener,
    rings,
)
from services.ipc.naming import NET_REGIONS
from services.ipc.network import NetAdapter, parse_mac

log = logging.getLogger("headbox.vcpu.net")

# VirtualBox's PCI slots for adapters 1-8
ADAPTER_PCI_SLOTS = (3, 8, 9, 10, 11, 12, 13, 14)


class Family(NamedTuple):
    """A card model and its PCI face: every family has the same interface (see E1000)."""
    device: type
    pci: type
    io_size: int
    mmio_size: int
    interrupt_pin: int


FAMILIES = {chip: family for module, family in (
    (e1000, Family(e1000.E1000, e1000.E1000Pci, e1000.IO_SIZE, e1000.MMIO_SIZE, e1000.INTA)),
    (pcnet, Family(pcnet.PcNet, pcnet.PcNetPci, pcnet.IO_SIZE, pcnet.MMIO_SIZE, pcnet.INTA)),
    (virtio, Family(virtio.VirtioNet, virtio.VirtioNetPci, virtio.IO_SIZE, virtio.MMIO_SIZE, virtio.INTA)))
    for chip in module.CHIPS}


class _Window:
    """A register window of a card on the bus: every access under the cards' lock, then the
    engine told about the card's DMA and the doorbell rung for what it transmitted."""

    def __init__(self, card: "NetworkCard", read, write):
        self.card, self._read, self._write = card, read, write

    def read(self, offset: int, size: int) -> int:
        card = self.card
        with card.lock:
            value = self._read(offset, size)
            card.after_access()            # some reads act (PCnet's RESET port)
            return value

    def write(self, offset: int, size: int, value: int) -> None:
        card = self.card
        with card.lock:
            self._write(offset, size, value)
            card.after_access()

    def reset(self) -> None:
        pass                       # the card resets with the PCI function (NetworkCards.reset)

    def snapshot(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass


class NetworkCard:
    """One adapter: its card model, PCI function, register windows and end of the rings."""

    def __init__(self, adapter: NetAdapter, memory, bus, pci_root, region, lock, note_dma):
        self.adapter, self.bus, self.lock = adapter, bus, lock
        self.pci_slot = ADAPTER_PCI_SLOTS[adapter.slot]
        self.to_nat, self.to_guest = rings(region.view()) if region is not None else (None, None)
        self.region = region
        self.doorbell = lambda slot: None
        self.transmitted = False
        self.dropped = 0
        # Guest RAM the card wrote, told to the engine once per access or batch of frames: each
        # notice makes the JIT check for stale code, which costs more than a frame.
        self.written: list[tuple[int, int]] = []
        self.note_dma = note_dma
        interrupts = pci_root.interrupts
        self.family = family = FAMILIES[adapter.chip]
        self.nic = family.device(
            adapter.chip, parse_mac(adapter.mac), memory, transmit=self._transmit,
            set_irq=lambda level: interrupts.set_level(self.pci_slot, family.interrupt_pin, level),
            on_dma_write=lambda gpa, length: self.written.append((gpa, length)),
            link_up=self._cable_connected(adapter.cable), on_receive_space=self.pump)
        self.mmio = _Window(self, self.nic.read, self.nic.write)
        self.io = _Window(self, self.nic.io_read, self.nic.io_write)
        self.pci = family.pci(adapter.chip, on_mmio_change=self._move_mmio, on_io_change=self._move_io)
        pci_root.add(self.pci, self.pci_slot)

    def _cable_connected(self, cable: bool) -> bool:
        return cable and self.to_nat is not None      # "null": a card with no cable behind it

    def _move_mmio(self, address: int | None) -> None:
        self.bus.unregister(self.mmio)
        if address is not None:
            self.bus.register(self.mmio, "mmio", address, self.family.mmio_size,
                              name=f"nic{self.adapter.slot}-mmio")

    def _move_io(self, port: int | None) -> None:
        self.bus.unregister(self.io)
        if port is not None:
            self.bus.register(self.io, "pio", port, self.family.io_size, name=f"nic{self.adapter.slot}-io")

    def after_access(self) -> None:
        """Under the lock, after the guest touched a register or frames came in."""
        if self.written:
            self.note_dma(self.written)
            self.written = []
        if self.transmitted:
            self.transmitted = False
            self.doorbell(self.adapter.slot)

    def _transmit(self, frame: bytes) -> None:
        if self.to_nat is None or not self.nic.link_up:
            return
        if self.to_nat.push(frame):
            self.transmitted = True
        else:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:      # 1, 2, 4, 8...: a log, not a flood
                log.warning("adapter %d: %d frames dropped (the NAT is not keeping up, or a frame "
                            "was over %d bytes)", self.adapter.slot + 1, self.dropped, MAX_FRAME)
            self.transmitted = True

    def pump(self) -> None:
        """Frames waiting in to_guest into the driver's buffers, while it has room."""
        ring = self.to_guest
        if ring is None:
            return
        with self.lock:
            while True:
                frame = ring.peek()
                if frame is None or not self.nic.receive(frame):
                    break
                ring.pop()
            if self.written:
                self.note_dma(self.written)
                self.written = []

    def set_link(self, up: bool) -> None:
        with self.lock:
            self.nic.set_link(self._cable_connected(up))

    def reset(self) -> None:
        with self.lock:
            self.nic.reset()

    def snapshot(self) -> dict:
        with self.lock:
            return self.nic.snapshot()

    def restore(self, state: dict) -> None:
        with self.lock:
            self.nic.restore(state)


class NetworkCards:
    """Every adapter of the spec. `doorbell(slot)` is set once the net channel is up."""

    def __init__(self, adapters, memory, bus, create_region, note_dma):
        # One lock for all cards: they share the board's interrupt routing.
        self.lock = threading.RLock()
        root = bus.device("pci").root
        self.cards: dict[int, NetworkCard] = {}
        for adapter in adapters:
            region = create_region(NET_REGIONS[adapter.slot], REGION_SIZE) if adapter.attachment == "nat" else None
            self.cards[adapter.slot] = NetworkCard(adapter, memory, bus, root, region, self.lock, note_dma)

    def connect(self, doorbell: Doorbell) -> None:
        for card in self.cards.values():
            card.doorbell = doorbell.ring

    def pump(self, slot: int) -> None:
        card = self.cards.get(slot)
        if card is not None:
            card.pump()

    def set_link(self, slot: int, up: bool) -> None:
        card = self.cards.get(slot)
        if card is None:
            raise ValueError(f"the VM has no network adapter {slot + 1}")
        card.set_link(up)

    def reset(self) -> None:
        for card in self.cards.values():
            card.reset()

    def snapshot(self) -> dict:
        return {str(slot): card.snapshot() for slot, card in self.cards.items()}

    def restore(self, state: dict) -> None:
        if set(state) != {str(slot) for slot in self.cards}:
            raise ValueError("the saved network adapters differ from this VM's")
        for slot, card in self.cards.items():
            card.restore(state[str(slot)])


class DoorbellThread:
    """Listens on net-in and pumps the rung adapters' frames into the guest."""

    def __init__(self, endpoint: str, cards: NetworkCards):
        self.listener = DoorbellListener(endpoint)
        self.cards = cards
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="net-in", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.closed:
            if not self.listener.socket.poll(200):
                continue
            for slot in self.listener.take():
                try:
                    self.cards.pump(slot)
                except Exception:
                    log.exception("adapter %d: receive failed", slot + 1)

    def close(self) -> None:
        self.closed = True
        self.thread.join(timeout=1)
        self.listener.close()
