"""The io channel: port and MMIO accesses from the vCPU process to the device bus process.

Writes are posted and batched; a read flushes the batch and waits for its one reply, so device
ordering is exactly the guest's. REP INS/OUTS travel as one string message (research/peers.md §6:
a round trip costs ~90 µs against ~8 µs for an exit, so round trips are the thing to avoid)."""

from __future__ import annotations

import logging
import threading
import time

import zmq

from services.ipc.messages import IO_VERSION, Io, ProtocolError, pack, unpack
from services.ipc.naming import restrict_socket

log = logging.getLogger("headbox.ipc.io")

MAX_BATCH = 256
FLUSH_AFTER_S = 0.001       # a posted write waits at most this long for company
REPLY_TIMEOUT_MS = 5000


class RemoteBus:
    """The vCPU side: an IoBus whose devices live in another process."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None):
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
        self._flusher = threading.Thread(target=self._flush_loop, name="io-flush", daemon=True)
        self._flusher.start()

    # -- posted writes -------------------------------------------------------------------------
    def _post(self, message: list) -> None:
        with self.lock:
            if not self.batch:
                self.batch_since = time.monotonic()
            self.batch.append(message)
            self.writes += 1
            if len(self.batch) >= MAX_BATCH:
                self._send_locked()

    def pio_write(self, port: int, size: int, value: int) -> None:
        self._post([Io.PIO_WRITE, port, size, value])

    def pio_write_string(self, port: int, size: int, data: bytes) -> None:
        self._post([Io.PIO_WRITE_STRING, port, size, bytes(data)])

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
        while not self.closed:
            time.sleep(FLUSH_AFTER_S)
            if self.batch and time.monotonic() - self.batch_since >= FLUSH_AFTER_S:
                self.flush()

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
                reply_seq, value = unpack(self.socket.recv())
                if reply_seq == seq:
                    return value

    def pio_read(self, port: int, size: int) -> int:
        return self._read(Io.PIO_READ, port, size, default=(1 << (8 * size)) - 1)

    def pio_read_string(self, port: int, size: int, count: int) -> bytes:
        return self._read(Io.PIO_READ_STRING, port, size, count, default=b"\xff" * (size * count))

    def mmio_read(self, addr: int, size: int) -> int:
        return self._read(Io.MMIO_READ, addr, size, default=(1 << (8 * size)) - 1)

    def close(self) -> None:
        self.flush()
        self.closed = True
        self.socket.close()


class IoServer:
    """The device-bus side: applies a batch to a bus and answers its read, in order."""

    def __init__(self, endpoint: str, bus, context: zmq.Context | None = None):
        self.bus = bus
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
        for message in batch:
            code = message[0]
            if code == Io.PIO_WRITE:
                bus.pio_write(message[1], message[2], message[3])
            elif code == Io.MMIO_WRITE:
                bus.mmio_write(message[1], message[2], message[3])
            elif code == Io.PIO_WRITE_STRING:
                bus.pio_write_string(message[1], message[2], message[3])
            elif code == Io.PIO_READ:
                replies.append([message[1], bus.pio_read(message[2], message[3])])
            elif code == Io.MMIO_READ:
                replies.append([message[1], bus.mmio_read(message[2], message[3])])
            elif code == Io.PIO_READ_STRING:
                replies.append([message[1], bytes(bus.pio_read_string(message[2], message[3], message[4]))])
            else:
                raise ProtocolError(f"unknown io message {code}")
        return replies

    def close(self) -> None:
        self.socket.close()


class IrqSender:
    """Devices side of the irq channel: interrupt line levels, pushed."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None):
        self.socket = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.connect(endpoint)
        self.lock = threading.Lock()

    def set_irq(self, gsi: int, level: bool) -> None:
        with self.lock:
            self.socket.send(pack([1, gsi, bool(level)]))

    def close(self) -> None:
        self.socket.close()


class IrqReceiver:
    """vCPU side of the irq channel: a thread that drives the engine's interrupt lines."""

    def __init__(self, endpoint: str, set_irq, context: zmq.Context | None = None):
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        restrict_socket(endpoint)
        self.set_irq = set_irq
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="irq-receiver", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.closed:
            if not self.socket.poll(200):
                continue
            try:
                version, gsi, level = unpack(self.socket.recv())
                if version == 1 and 0 <= gsi < 24:
                    self.set_irq(gsi, level)
            except Exception:
                log.exception("bad irq message")

    def close(self) -> None:
        self.closed = True
        self.thread.join(timeout=1)
        self.socket.close()
