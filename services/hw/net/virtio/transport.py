"""The legacy virtio-PCI register block (the "legacy interface" of virtio 1.x): feature bits, queue
setup by page frame, notify, device status, the read-to-clear ISR, and the device's config after."""

from __future__ import annotations

from typing import Callable

from services.hw.net.virtio.complaints import Complaints
from services.hw.net.virtio.virtqueue import Virtqueue

HOST_FEATURES, GUEST_FEATURES, QUEUE_PFN, QUEUE_NUM = 0x00, 0x04, 0x08, 0x0C
QUEUE_SEL, QUEUE_NOTIFY, DEVICE_STATUS, ISR_STATUS = 0x0E, 0x10, 0x12, 0x13
DEVICE_CONFIG = 0x14                # without MSI-X (none here) the device's config follows at once
_REGISTERS = ((HOST_FEATURES, 4), (GUEST_FEATURES, 4), (QUEUE_PFN, 4), (QUEUE_NUM, 2), (QUEUE_SEL, 2),
              (QUEUE_NOTIFY, 2), (DEVICE_STATUS, 1), (ISR_STATUS, 1))

STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED = 0x01, 0x02, 0x04, 0x80
ISR_QUEUE, ISR_CONFIG = 0x1, 0x2

F_ANY_LAYOUT, F_RING_INDIRECT_DESC, F_RING_EVENT_IDX = 27, 28, 29


class LegacyVirtioDevice:
    """A device behind the legacy register block. Subclasses supply the queues and the hooks
    below; reset() is what the driver's write of 0 to the status register does."""

    def __init__(self, memory, host_features: int, queues: list[tuple[str, int]],
                 set_irq: Callable[[bool], None], on_dma_write: Callable[[int, int], None]):
        self.complaints = Complaints()
        self.queues = [Virtqueue(size, memory, on_dma_write, self.complaints, name) for name, size in queues]
        self.host_features = host_features & 0xFFFFFFFF       # the legacy register has 32 bits
        self.set_irq = set_irq
        self.irq_level = False
        self.guest_features = self.status = self.isr = self.queue_select = 0
        self.event_idx = False

    # -- what a device adds --------------------------------------------------------------------
    def reset(self) -> None:
        self.reset_transport()

    def features_changed(self) -> None:
        """The driver wrote its feature bits (self.guest_features)."""

    def config_bytes(self) -> bytes:
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        """The driver wrote `data` at `offset` in the device config."""

    def queue_notified(self, index: int) -> None:
        """The driver kicked queue `index`."""

    def driver_ready(self) -> None:
        """The driver set DRIVER_OK: buffers it posted before now count."""

    # -- the transport -----------------------------------------------------------------------
    def reset_transport(self) -> None:
        self.guest_features = self.status = self.isr = self.queue_select = 0
        for queue in self.queues:
            queue.reset()
        self._features_written()
        self._update_irq()

    @property
    def driver_ok(self) -> bool:
        return bool(self.status & STATUS_DRIVER_OK)

    def has_feature(self, bit: int) -> bool:
        return bool(self.guest_features >> bit & 1)

    def _features_written(self) -> None:
        self.event_idx = self.has_feature(F_RING_EVENT_IDX)
        self.features_changed()

    def interrupt_queue(self) -> None:
        if not self.isr & ISR_QUEUE:
            self.isr |= ISR_QUEUE
            self._update_irq()

    def interrupt_config(self) -> None:
        """The config changed; the driver hears of it only once it runs the device."""
        if self.status & STATUS_DRIVER_OK:
            self.isr |= ISR_CONFIG
            self._update_irq()

    def _update_irq(self) -> None:
        level = self.isr != 0
        if level != self.irq_level:
            self.irq_level = level
            self.set_irq(level)

    # -- register access (the I/O BAR; the memory BAR mirrors it) --------------------------------
    def io_read(self, offset: int, size: int) -> int:
        if offset == ISR_STATUS and size == 1:
            return self._take_isr()
        image = b"".join(self._register(start).to_bytes(width, "little") for start, width in _REGISTERS)
        image += self.config_bytes()
        value = int.from_bytes(image[offset:offset + size].ljust(size, b"\0"), "little")
        if offset <= ISR_STATUS < offset + size:
            self._take_isr()
        return value

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == QUEUE_NOTIFY and size == 2:
            self._notify(value & 0xFFFF)
            return
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        for start, width in _REGISTERS:
            low, high = max(start, offset), min(start + width, offset + size)
            if low < high:          # a write that covers part of a register merges into it
                merged = bytearray(self._register(start).to_bytes(width, "little"))
                merged[low - start:high - start] = data[low - offset:high - offset]
                self._write_register(start, int.from_bytes(merged, "little"))
        if offset + size > DEVICE_CONFIG:
            skip = max(0, DEVICE_CONFIG - offset)
            self.write_config(offset + skip - DEVICE_CONFIG, data[skip:])

    def read(self, offset: int, size: int) -> int:
        return self.io_read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.io_write(offset, size, value)

    def _selected(self) -> Virtqueue | None:
        return self.queues[self.queue_select] if self.queue_select < len(self.queues) else None

    def _register(self, start: int) -> int:
        """A register's value, without the ISR's read side effect."""
        if start == HOST_FEATURES:
            return self.host_features
        if start == GUEST_FEATURES:
            return self.guest_features
        if start in (QUEUE_PFN, QUEUE_NUM):
            queue = self._selected()
            return 0 if queue is None else queue.pfn if start == QUEUE_PFN else queue.size
        if start == QUEUE_SEL:
            return self.queue_select
        if start == DEVICE_STATUS:
            return self.status
        if start == ISR_STATUS:
            return self.isr
        return 0                    # QUEUE_NOTIFY reads as 0

    def _write_register(self, start: int, value: int) -> None:
        if start == GUEST_FEATURES:
            self.guest_features = value & self.host_features
            self._features_written()
        elif start == QUEUE_PFN:
            queue = self._selected()
            if queue is not None:
                queue.set_pfn(value)
        elif start == QUEUE_SEL:
            self.queue_select = value
        elif start == QUEUE_NOTIFY:
            self._notify(value)
        elif start == DEVICE_STATUS:
            if value == 0:
                self.reset()
                return
            became_ok = value & STATUS_DRIVER_OK and not self.status & STATUS_DRIVER_OK
            self.status = value
            if became_ok:
                self.driver_ready()
        # HOST_FEATURES, QUEUE_NUM (the device chooses the size in legacy) and ISR are read-only

    def _notify(self, index: int) -> None:
        if index < len(self.queues):
            self.queue_notified(index)

    def _take_isr(self) -> int:
        """The interrupt handler's read: the causes, cleared, and the line let go."""
        isr = self.isr
        if isr:
            self.isr = 0
            self._update_irq()
        return isr

    # -- state -------------------------------------------------------------------------------
    def snapshot_transport(self) -> dict:
        return {"guest_features": self.guest_features, "status": self.status, "isr": self.isr,
                "queue_select": self.queue_select, "queues": [queue.snapshot() for queue in self.queues]}

    def restore_transport(self, state: dict) -> None:
        queues = state["queues"]
        if len(queues) != len(self.queues):
            raise ValueError(f"the saved device has {len(queues)} queues, this one {len(self.queues)}")
        for queue, saved in zip(self.queues, queues):
            queue.restore(saved)
        self.guest_features = int(state["guest_features"]) & self.host_features
        self.status = int(state["status"]) & 0xFF
        self.isr = int(state["isr"]) & (ISR_QUEUE | ISR_CONFIG)
        self.queue_select = int(state["queue_select"]) & 0xFFFF
        self.event_idx = self.has_feature(F_RING_EVENT_IDX)
        self.features_changed()
        self.irq_level = False
        self._update_irq()
