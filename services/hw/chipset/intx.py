"""PCI interrupt lines (INTA-INTD of bus-0 devices) steered to ISA IRQs by the PIIX3's PIRQ
routing registers. Lines are level-triggered and shared: an IRQ is high while any device routed
to it holds its pin asserted, and a routing change moves the asserted pins with it."""

from __future__ import annotations

import threading
from typing import Callable


class IntxRouter:
    """`route(slot, pin)` is the ISA IRQ a pin reaches now (Piix3IsaBridge.pci_irq), or None."""

    def __init__(self, route: Callable[[int, int], int | None],
                 set_irq: Callable[[int, bool], None] | None = None):
        self.route, self.set_irq = route, set_irq or (lambda irq, level: None)
        self.asserted: set[tuple[int, int]] = set()
        self.driven: set[int] = set()
        # Cards raise their lines from the threads that deliver their frames, routing changes
        # come from the vCPU: one lock keeps the driven set true.
        self._lock = threading.Lock()

    def set_level(self, slot: int, pin: int, level: bool) -> None:
        with self._lock:
            if level:
                self.asserted.add((slot, pin))
            else:
                self.asserted.discard((slot, pin))
            self._drive()

    def reroute(self, _routes=None) -> None:
        with self._lock:
            self._drive()

    def _drive(self) -> None:
        wanted = {self.route(slot, pin) for slot, pin in self.asserted} - {None}
        for irq in sorted(self.driven - wanted):
            self.set_irq(irq, False)
        for irq in sorted(wanted - self.driven):
            self.set_irq(irq, True)
        self.driven = wanted
