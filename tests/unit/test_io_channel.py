"""The io channel keeps the guest's access order, batches posted writes and carries string I/O."""

import multiprocessing
import os
import threading

import pytest

from services.ipc.io import IoServer, IrqReceiver, IrqSender, RemoteBus
from services.ipc.messages import IO_VERSION, ProtocolError, pack


class RecordingBus:
    def __init__(self):
        self.log = []
        self.regs = {}

    def pio_write(self, port, size, value):
        self.log.append(("w", port, value))
        self.regs[port] = value

    def pio_read(self, port, size):
        self.log.append(("r", port))
        return self.regs.get(port, 0xFF)

    def pio_write_string(self, port, size, data):
        self.log.append(("ws", port, bytes(data)))

    def pio_read_string(self, port, size, count):
        return bytes(range(count * size))

    def mmio_write(self, addr, size, value):
        self.log.append(("mw", addr, value))

    def mmio_read(self, addr, size):
        return addr & 0xFF


@pytest.fixture
def channel(tmp_path):
    endpoint = f"ipc://{tmp_path}/io"
    bus = RecordingBus()
    server = IoServer(endpoint, bus)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if server.socket.poll(50):
                server.handle_one()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = RemoteBus(endpoint)
    yield client, bus, endpoint
    stop.set()
    thread.join()
    client.close()
    server.close()


def test_reads_see_earlier_posted_writes_in_order(channel):
    client, bus, _ = channel
    for value in range(10):
        client.pio_write(0x80, 1, value)
    assert client.pio_read(0x80, 1) == 9
    assert [entry for entry in bus.log if entry[0] == "w"] == [("w", 0x80, v) for v in range(10)]
    # ten writes and a read travelled as one frame
    assert client.frames == 1


def test_string_io_and_mmio(channel):
    client, bus, _ = channel
    assert client.pio_read_string(0x1F0, 2, 4) == bytes(range(8))
    client.pio_write_string(0x3F8, 1, b"hello")
    client.mmio_write(0xFEBF0000, 4, 7)
    assert client.mmio_read(0xFEBF0012, 4) == 0x12
    assert ("ws", 0x3F8, b"hello") in bus.log and ("mw", 0xFEBF0000, 7) in bus.log


def test_posted_writes_are_flushed_without_a_read(channel):
    client, bus, _ = channel
    client.pio_write(0x3F8, 1, ord("x"))
    deadline = threading.Event()
    for _ in range(100):
        if bus.log:
            break
        deadline.wait(0.005)
    assert bus.log == [("w", 0x3F8, ord("x"))]


def test_socket_file_is_private(channel):
    _, _, endpoint = channel
    assert os.stat(endpoint[len("ipc://"):]).st_mode & 0o777 == 0o600


def test_bad_frames_are_protocol_errors(tmp_path):
    server = IoServer(f"ipc://{tmp_path}/io", RecordingBus())
    try:
        with pytest.raises(ProtocolError):
            server.serve(b"\xc1garbage")
        with pytest.raises(ProtocolError):
            server.serve(pack([IO_VERSION + 1, []]))
        with pytest.raises(ProtocolError):
            server.serve(pack([IO_VERSION, [[99, 1, 2]]]))
    finally:
        server.close()


def _device_process(endpoint, irq_endpoint):
    bus = RecordingBus()
    server = IoServer(endpoint, bus)
    irq = IrqSender(irq_endpoint)
    while True:
        server.handle_one()
        if bus.regs.get(0x64) == 0xFE:   # the test's "raise IRQ 1 and quit" command
            irq.set_irq(1, True)
            irq.close()
            server.close()
            return


def test_across_processes_with_interrupts(tmp_path):
    endpoint, irq_endpoint = f"ipc://{tmp_path}/io", f"ipc://{tmp_path}/irq"
    lines = []
    got = threading.Event()
    receiver = IrqReceiver(irq_endpoint, lambda gsi, level: (lines.append((gsi, level)), got.set()))
    proc = multiprocessing.get_context("spawn").Process(target=_device_process, args=(endpoint, irq_endpoint))
    proc.start()
    client = RemoteBus(endpoint)
    try:
        client.pio_write(0x70, 1, 0x0F)
        assert client.pio_read(0x70, 1) == 0x0F
        client.pio_write(0x64, 1, 0xFE)
        client.flush()
        assert got.wait(10), "the device process's interrupt never arrived"
        assert lines == [(1, True)]
    finally:
        client.close()
        receiver.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def test_regions_of_dead_owners_are_swept():

    from services.ipc.shm import SHM_DIR, SharedRegion, sweep_stale

    live = SharedRegion.create("headbox-test-live", 4096)
    dead = os.path.join(SHM_DIR, "headbox-test-dead")
    with open(dead, "wb") as f:           # what a killed owner leaves: a file nobody locks
        f.write(b"\0" * 4096)
    try:
        assert sweep_stale("headbox-test-") == [], "too young to judge"
        removed = sweep_stale("headbox-test-", min_age=0)
        assert removed == ["headbox-test-dead"] and not os.path.exists(dead)
        assert os.path.exists(live.path), "a region whose owner lives is kept"
    finally:
        live.close()
        live.unlink()
        if os.path.exists(dead):
            os.unlink(dead)
