"""The transmit ring: frames gathered from STP...ENP chains of descriptors the chip owns, padded to
the Ethernet minimum and sent, and every descriptor handed back with the errors the chip would report."""

from __future__ import annotations

from typing import Callable

from services.hw.net.pcnet.descriptors import TRANSMIT, Ring, buffer_length
from services.hw.net.pcnet.ethernet import (
    MAX_FRAME,
    MAX_TAGGED_FRAME,
    MIN_FRAME,
    fits_the_wire,
)
from services.hw.net.pcnet.guest_errors import GuestErrors
from services.hw.net.pcnet.registers import (
    DESC_ERR,
    ENP,
    OWN,
    STP,
    TX_BUFF,
    TX_LCAR,
    TX_UFLO,
)

# What a pass over the ring did, for the device's CSR0/CSR4 bits
STARTED, INTERRUPT, CARRIER_LOST, UNDERFLOW, MEMORY_ERROR = 0x01, 0x02, 0x04, 0x08, 0x10


def transmit_ring(ring: Ring, memory, send: Callable[[bytes], None], written: Callable[[int, int], None],
                  errors: GuestErrors, *, carrier: bool, interrupt_on_success: Callable[[int], bool]) -> int:
    """Send every complete frame the driver has handed over, at most one lap of the ring.
    `interrupt_on_success(status)` says whether a good frame ending at a descriptor with that
    status earns TINT (CSR5's TOKINTD/LTINTEN). Returns the outcome bits above."""
    outcome = 0
    budget = ring.count
    index = ring.index
    while budget > 0:
        try:
            first = ring.load(memory, index)
        except ValueError:
            errors.report("tx-ring", "transmit descriptor at %#x is not guest RAM", ring.address(index))
            return outcome | MEMORY_ERROR
        if not first.status & OWN:
            break
        outcome |= STARTED
        chain, ended, lost = _gather(ring, memory, index, first, budget)
        budget -= len(chain)
        index = ring.advance(chain[-1][0])
        last_status, extra = chain[-1][1].status, 0
        if lost:
            errors.report("tx-ring", "transmit descriptor after %#x is not guest RAM", ring.address(chain[-1][0]))
            extra = TX_BUFF
            outcome |= MEMORY_ERROR | INTERRUPT
        elif not chain[0][1].status & STP:
            errors.report("tx-stp", "transmit descriptor %d owned by the chip but not a frame start: skipped",
                          chain[0][0])
            extra = None
        elif not ended:
            errors.report("tx-chain", "transmit chain from descriptor %d has no end (ENP)", chain[0][0])
            extra = TX_BUFF | TX_UFLO           # the chip ran out of descriptors mid-frame
            outcome |= UNDERFLOW | INTERRUPT
        else:
            frame = _read_frame(chain, memory, errors)
            if frame is None:
                extra = TX_BUFF
                outcome |= MEMORY_ERROR | INTERRUPT
            elif not carrier:
                extra = TX_LCAR                 # the cable is out: loss of carrier, as VirtualBox reports
                outcome |= CARRIER_LOST | INTERRUPT
            else:
                if frame:
                    send(frame)
                if interrupt_on_success(last_status):
                    outcome |= INTERRUPT
        _give_back(ring, memory, chain, extra, written, errors)
        if lost or (extra and extra & TX_UFLO):
            break                               # the chip stops here; the driver restarts it
    ring.index = index
    return outcome


def _gather(ring: Ring, memory, index: int, first, budget: int) -> tuple[list, bool, bool]:
    """The chain starting with `first` at `index`: [(index, descriptor)], whether it reached ENP,
    and whether a descriptor was outside RAM. It stops at a descriptor the driver still owns."""
    chain = [(index, first)]
    if not chain[0][1].status & STP:
        return chain, False, False
    while not chain[-1][1].status & ENP:
        if len(chain) >= budget:
            return chain, False, False
        index = ring.advance(index)
        try:
            descriptor = ring.load(memory, index)
        except ValueError:
            return chain, False, True
        if not descriptor.status & OWN:
            return chain, False, False
        chain.append((index, descriptor))
    return chain, True, False


def _read_frame(chain: list, memory, errors: GuestErrors) -> bytes | None:
    """The frame's bytes, padded to 60; b"" for a frame that must not leave (oversized or
    headerless); None when a buffer is outside RAM."""
    total = 0
    for _, descriptor in chain:
        total += buffer_length(descriptor.count)
    if total > MAX_TAGGED_FRAME:
        errors.report("tx-size", "transmit frame of %d bytes dropped (over %d)", total, MAX_FRAME)
        return b""
    pieces = []
    for _, descriptor in chain:
        length = buffer_length(descriptor.count)
        if length:
            try:
                pieces.append(memory.read(descriptor.buffer, length))
            except ValueError:
                errors.report("tx-buffer", "transmit buffer at %#x+%d is not guest RAM", descriptor.buffer, length)
                return None
    frame = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if not fits_the_wire(frame):
        errors.report("tx-size", "transmit frame of %d bytes dropped (no header, or over %d)", total, MAX_FRAME)
        return b""
    return frame if total >= MIN_FRAME else frame + bytes(MIN_FRAME - total)


def _give_back(ring: Ring, memory, chain: list, extra: int | None, written, errors: GuestErrors) -> None:
    """OWN cleared on every descriptor of the chain; the errors (if any) on the last one."""
    last = len(chain) - 1
    for position, (index, descriptor) in enumerate(chain):
        status, bits = descriptor.status & ~OWN, 0
        if position == last and extra:
            status |= DESC_ERR
            bits = extra
        try:
            ring.store(memory, index, status, None if extra is None else bits, TRANSMIT, written)
        except ValueError:
            errors.report("tx-ring", "transmit descriptor at %#x is not guest RAM", ring.address(index))
