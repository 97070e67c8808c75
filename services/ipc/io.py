"""The io channel: port and MMIO accesses from the vCPU process to the device bus process.

Writes are posted and batched; a read flushes the batch and waits for its one reply, so device
ordering is exactly the guest's. REP INS/OUTS travel as one string message (research/peers.md §6:
a round trip costs ~90 µs against ~8 µs for an exit, so round trips are the thing to avoid)."""

from __future__ import annotations

import abc
import logging
import threading
import time

import zmq

from services.ipc.messages import (
    INPUT_VERSION,
    IO_VERSION,
    IRQ_VERSION,
    Input,
    Io,
    Irq,
    ProtocolError,
    pack,
    unpack,
)
from services.ipc.naming import restrict_socket

log = logging.getLogger("headbox.ipc.io")

MAX_BATCH = 256
FLUSH_AFTER_S = 0.001       # a posted write waits at most this long for company
REPLY_TIMEOUT_MS = 5000


class RemoteBus:
    """The vCPU side: an IoBus whose devices live in another process."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None, on_dma=None):
        self.on_dma = on_dma            # ([(gpa, length), ...]) -> None, from the reading thread
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.lock = threading.Lock()
        self.batch: list = []
        self.batch_since = 0.0
        self.seq = 0
        self.reads = self.writes = self.frames = 0
        self.closed = False
        self._pending = threading.Event()     # set while posted writes wait in the batch
        self._flusher = threading.Thread(target=self._flush_loop, name="io-flush", daemon=True)
        self._flusher.start()

    # -- posted writes -------------------------------------------------------------------------
    def _post(self, message: list) -> None:
        with self.lock:
            if not self.batch:
                self.batch_since = time.monotonic()
                self._pending.set()
            self.batch.append(message)
            self.writes += 1
            if len(self.batch) >= MAX_BATCH:
                self._send_locked()

    def pio_write(self, port: int, size: int, value: int) -> None:
        self._post([Io.PIO_WRITE, port, size, value])

    def pio_write_string(self, port: int, size: int, data: bytes) -> None:
        self._post([Io.PIO_WRITE_STRING, port, size, bytes(data)])

    def pci_config_write(self, device: int, function: int, offset: int, size: int, value: int) -> None:
        self._post([Io.PCI_CONFIG_WRITE, device, function, offset, size, value])

    def reset(self) -> None:
        """Platform reset of the remote devices, in order with the accesses before it."""
        self._post([Io.RESET])
        self.flush()

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        self._post([Io.MMIO_WRITE, addr, size, value])

    def flush(self) -> None:
        with self.lock:
            if self.batch:
                self._send_locked()

    def _send_locked(self) -> None:
        self.socket.send(pack([IO_VERSION, self.batch]))
        self.frames += 1
        self.batch = []

    def _flush_loop(self) -> None:
        """Sleeps while nothing is posted (an idle VM costs no wake-ups), else flushes a batch
        at most FLUSH_AFTER_S after its first write."""
        while not self.closed:
            if not self._pending.wait(0.5):
                continue
            time.sleep(FLUSH_AFTER_S)
            with self.lock:
                self._pending.clear()
                if self.batch:
                    self._send_locked()

    # -- synchronous reads ---------------------------------------------------------------------
    def _read(self, message_code: int, *args, default):
        with self.lock:
            self.seq = (self.seq + 1) & 0xFFFFFFFF
            seq = self.seq
            self.batch.append([message_code, seq, *args])
            self._send_locked()
            self.reads += 1
            while True:
                if not self.socket.poll(REPLY_TIMEOUT_MS):
                    log.error("device bus did not answer a read in %d ms", REPLY_TIMEOUT_MS)
                    return default
                reply_seq, value, dma = unpack(self.socket.recv())
                if dma and self.on_dma is not None:
                    self.on_dma(dma)
                if reply_seq == seq:
                    return value

    def pio_read(self, port: int, size: int) -> int:
        return self._read(Io.PIO_READ, port, size, default=(1 << (8 * size)) - 1)

    def pio_read_string(self, port: int, size: int, count: int) -> bytes:
        return self._read(Io.PIO_READ_STRING, port, size, count, default=b"\xff" * (size * count))

    def mmio_read(self, addr: int, size: int) -> int:
        return self._read(Io.MMIO_READ, addr, size, default=(1 << (8 * size)) - 1)

    def sync(self) -> None:
        """Return once the device process has applied every access posted before (a snapshot of
        both processes must not miss a write still on its way)."""
        self._read(Io.SYNC, default=None)

    def close(self) -> None:
        self.flush()
        self.closed = True
        self._pending.set()
        self._flusher.join(timeout=1)
        self.socket.close()


class DmaLog:
    """Guest RAM ranges devices wrote, until the vCPU side has been told (reply or interrupt)."""

    def __init__(self):
        self.ranges: list[tuple[int, int]] = []

    def __call__(self, gpa: int, length: int) -> None:
        ranges = self.ranges
        if ranges and ranges[-1][0] + ranges[-1][1] == gpa:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
        else:
            ranges.append((gpa, length))

    def take(self) -> list:
        ranges, self.ranges = self.ranges, []
        return ranges


class IoServer:
    """The device-bus side: applies a batch to a bus and answers its read, in order."""

    def __init__(self, endpoint: str, bus, context: zmq.Context | None = None,
                 dma_log: DmaLog | None = None, pci=None, reset=None):
        self.bus = bus
        self.reset = reset or getattr(bus, "reset", lambda: None)   # platform reset of this process
        self.dma_log = dma_log or DmaLog()
        self.pci = pci      # (device, function, offset, size, value) -> None: config writes
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        restrict_socket(endpoint)

    def handle_one(self) -> None:
        """Receive one frame (blocking) and serve it."""
        identity, frame = self.socket.recv_multipart()
        for reply in self.serve(frame):
            self.socket.send_multipart([identity, pack(reply)])

    def serve(self, frame: bytes) -> list:
        try:
            version, batch = unpack(frame)
        except Exception as error:
            raise ProtocolError(f"undecodable io frame: {error}") from None
        if version != IO_VERSION:
            raise ProtocolError(f"io channel version {version}, expected {IO_VERSION}")
        bus, replies = self.bus, []
        dma = self.dma_log
        for message in batch:
            code = message[0]
            if code == Io.PIO_WRITE:
                bus.pio_write(message[1], message[2], message[3])
            elif code == Io.MMIO_WRITE:
                bus.mmio_write(message[1], message[2], message[3])
            elif code == Io.PIO_WRITE_STRING:
                bus.pio_write_string(message[1], message[2], message[3])
            elif code == Io.PIO_READ:
                value = bus.pio_read(message[2], message[3])
                replies.append([message[1], value, dma.take()])
            elif code == Io.MMIO_READ:
                value = bus.mmio_read(message[2], message[3])
                replies.append([message[1], value, dma.take()])
            elif code == Io.PIO_READ_STRING:
                value = bytes(bus.pio_read_string(message[2], message[3], message[4]))
                replies.append([message[1], value, dma.take()])
            elif code == Io.PCI_CONFIG_WRITE:
                if self.pci is not None:
                    self.pci(*message[1:6])
            elif code == Io.RESET:
                self.reset()
            elif code == Io.SYNC:
                replies.append([message[1], None, dma.take()])
            else:
                raise ProtocolError(f"unknown io message {code}")
        return replies

    def close(self) -> None:
        self.socket.close()


class IrqSender:
    """Devices side of the irq channel: interrupt line levels, pushed."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None, dma_log: DmaLog | None = None):
        self.socket = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.connect(endpoint)
        self.lock = threading.Lock()
        self.dma_log = dma_log

    def set_irq(self, gsi: int, level: bool) -> None:
        with self.lock:
            if self.dma_log is not None and self.dma_log.ranges:
                self.socket.send(pack([IRQ_VERSION, Irq.DMA, self.dma_log.take()]))
            self.socket.send(pack([IRQ_VERSION, Irq.LINE, gsi, bool(level)]))

    def close(self) -> None:
        self.socket.close()


class PullReceiver(abc.ABC):
    """A bound PULL socket (0600) and a thread handing each decoded message to `handle`; a bad
    message is logged and dropped, never fatal."""

    def __init__(self, endpoint: str, channel: str, version: int, context: zmq.Context | None = None):
        self.channel, self.version = channel, version
        self.socket = (context or zmq.Context.instance()).socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        restrict_socket(endpoint)
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name=f"{channel}-receiver", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.closed:
            if not self.socket.poll(200):
                continue
            try:
                message = unpack(self.socket.recv())
                if message[0] != self.version:
                    raise ProtocolError(f"{self.channel} channel version {message[0]}, expected {self.version}")
                self.handle(message)
            except Exception:
                log.exception("bad %s message", self.channel)

    @abc.abstractmethod
    def handle(self, message: list) -> None:
        """One decoded message of this channel (version already checked)."""

    def close(self) -> None:
        self.closed = True
        self.thread.join(timeout=1)
        self.socket.close()


class IrqReceiver(PullReceiver):
    """vCPU side of the irq channel: drives the engine's interrupt lines, passes DMA notices on."""

    def __init__(self, endpoint: str, set_irq, context: zmq.Context | None = None, on_dma=None):
        self.set_irq, self.on_dma = set_irq, on_dma
        super().__init__(endpoint, "irq", IRQ_VERSION, context)

    def handle(self, message: list) -> None:
        if message[1] == Irq.LINE and 0 <= message[2] < 24:
            self.set_irq(message[2], message[3])
        elif message[1] == Irq.DMA and self.on_dma is not None:
            self.on_dma(message[2])


class InputSender:
    """Keyboard and mouse events into a VM (the RDP server's side of the input channel)."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None):
        self.socket = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.connect(endpoint)

    def key(self, scancode: int, extended: bool = False, pressed: bool = True) -> None:
        self.socket.send(pack([INPUT_VERSION, Input.KEY, scancode, bool(extended), bool(pressed)]))

    def mouse(self, dx: int, dy: int, dz: int = 0, buttons: int = 0) -> None:
        self.socket.send(pack([INPUT_VERSION, Input.MOUSE, dx, dy, dz, buttons]))

    def sync_locks(self, locks: int) -> None:
        """Make the guest's Scroll/Num/Caps Lock match the client's (bits 0, 1, 2)."""
        self.socket.send(pack([INPUT_VERSION, Input.SYNC, locks & 0x07]))

    def close(self) -> None:
        self.socket.close()


class InputReceiver(PullReceiver):
    """The vCPU process's side of the input channel: feeds the keyboard and mouse."""

    def __init__(self, endpoint: str, key, mouse, context: zmq.Context | None = None, sync_locks=None):
        self.key, self.mouse, self.sync_locks = key, mouse, sync_locks
        super().__init__(endpoint, "input", INPUT_VERSION, context)

    def handle(self, message: list) -> None:
        if message[1] == Input.KEY:
            self.key(int(message[2]) & 0xFF, bool(message[3]), bool(message[4]))
        elif message[1] == Input.MOUSE:
            self.mouse(int(message[2]), int(message[3]), int(message[4]), int(message[5]))
        elif message[1] == Input.SYNC and self.sync_locks is not None:
            self.sync_locks(int(message[2]) & 0x07)
