"""Fuzzes a live VRDP process (no VM: it serves a black screen) with mutated and truncated client PDUs of
every connection phase, mutated from a transcript recorded from a good client, while a well-behaved client
stays connected and keeps getting screen updates: no exception escapes, every bad connection is logged."""

import random
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from services.vrdp import mcs, x224
from services.vrdp.pdu import activation, share
from services.vrdp.pdu import input as rdp_input
from services.vrdp.tpkt import FrameKind
from tests.support.rdp_test_client import Closed, RdpClient
from tests.waiting import free_port, wait_for

TARGET_PDUS = 100_000
WORKERS = 6
BATCH = 24              # mutated PDUs sent at once in the active phase, each followed by a probe
EARLY_PER_PHASE = 100   # connections per phase before activation (one mutated PDU each)
# The client's PDUs in connection order (what Recorder.sent holds after activate()).
PHASES = (["X.224 connection request", "MCS connect initial", "MCS erect domain", "MCS attach user"]
          + [f"MCS channel join {i}" for i in range(6)]
          + ["client info", "confirm active", "finalization synchronize", "finalization cooperate",
             "finalization request control", "finalization font list"])


class Recorder(RdpClient):
    """A good client whose every PDU is kept, in order."""

    def __init__(self, port):
        super().__init__(port, user="fuzz", password="x")
        self.sent = []

    def send(self, data: bytes):
        self.sent.append(bytes(data))
        super().send(data)


def record_transcript(port):
    """The good connection sequence and the active-phase PDUs (slow- and fast-path input, refresh,
    suppress output, control), each as (wire bytes, rebuild) where rebuild(payload) re-wraps an inner
    payload with valid outer headers."""
    client = Recorder(port)
    client.activate()
    sequence = list(client.sent)
    assert len(sequence) == len(PHASES), len(sequence)
    user, share_id = client.user_id, client.share_id

    def data_pdu(pdu_type2):
        def rebuild(payload):
            return x224.wrap_data(mcs.build_domain_pdu(mcs.SendDataRequest(
                user, mcs.IO_CHANNEL_ID, share.build_share_data(share_id, user, pdu_type2, payload))))
        return rebuild

    def fastpath(body):
        length = 3 + len(body)
        return bytes((fast_input[0], 0x80 | (length >> 8), length & 0xFF)) + body

    events = [rdp_input.KeyboardEvent(0x1E), rdp_input.KeyboardEvent(0x1E, release=True),
              rdp_input.MouseEvent(rdp_input.PTR_FLAGS_MOVE, 10, 20), rdp_input.SyncEvent(0)]
    slow_input = rdp_input.build_input_pdu(events)
    fast_input = rdp_input.build_fastpath_input(events)
    refresh = struct.pack("<B3xHHHH", 1, 0, 0, 31, 31)
    suppress = struct.pack("<B3xHHHH", 1, 0, 0, 639, 479)
    control = activation.build_control(activation.CTRLACTION_REQUEST_CONTROL, 0, 0, share_id, user)
    # The value bytes of each inner payload (event times, flags, scancodes, coordinates, rectangles),
    # not its types and counts: mutating only those keeps the connection alive for the next PDU.
    slow_values = [4 + 12 * i + k for i in range(len(events)) for k in (0, 1, 2, 3, 6, 7, 8, 9, 10, 11)]
    fast_values = [1, 3, 5, 6, 7, 8, 9, 10]  # key codes, then the mouse event's flags and position
    rect_values = list(range(4, 12))
    active = [
        (data_pdu(share.PDUTYPE2_INPUT)(slow_input), slow_input, data_pdu(share.PDUTYPE2_INPUT), slow_values),
        (fast_input, fast_input[3:], fastpath, fast_values),
        (data_pdu(share.PDUTYPE2_REFRESH_RECT)(refresh), refresh, data_pdu(share.PDUTYPE2_REFRESH_RECT),
         rect_values),
        (data_pdu(share.PDUTYPE2_SUPPRESS_OUTPUT)(suppress), suppress, data_pdu(share.PDUTYPE2_SUPPRESS_OUTPUT),
         [0, *rect_values]),
    ]
    assert len(fast_input[3:]) == 12 and len(slow_input) == 4 + 12 * len(events)
    probe = x224.wrap_data(mcs.build_domain_pdu(mcs.SendDataRequest(user, mcs.IO_CHANNEL_ID, control)))
    for wire, *_ in active:
        client.send(wire)
    client.send(probe)
    assert _granted(client, 1, 10) == (1, False)  # the transcript is good: the server still answers
    client.close()
    return sequence, active, probe


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0 or not data:
        data = data[:rng.randrange(len(data) + 1)]  # truncated
    elif kind in (1, 2):
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 3:
        position = rng.randrange(len(data) + 1)
        data[position:position] = rng.randbytes(rng.randint(1, 16))
    elif kind == 4:
        position = rng.randrange(len(data))
        del data[position:position + rng.randint(1, 16)]
    else:
        position = rng.randrange(len(data))
        value = rng.choice((0, 0xFF, 0x7F, 0x80))
        data[position:position + 2] = bytes((value, value))  # boundary values in a length or count
    return bytes(data)


def fix_length(data: bytes) -> bytes:
    """Make the outer TPKT or fast-path length match the (mutated) frame, so the server parses it whole."""
    if len(data) >= 4 and data[0] == 3:
        return data[:2] + struct.pack(">H", len(data)) + data[4:]
    if len(data) >= 3 and data[0] & 3 == 0:
        header = 3 if data[1] & 0x80 else 2
        body = data[header:]
        length = 3 + len(body)
        return bytes((data[0], 0x80 | (length >> 8), length & 0xFF)) + body
    return data


def mutate_active(rng, active, sequence) -> bytes:
    # Mostly input (cheap for the server); refresh and suppress PDUs make it encode screen areas.
    [(wire, inner, rebuild, values)] = rng.choices(active, weights=(48, 48, 2, 2))
    choice = rng.random()
    if choice < 0.96:
        # Values only: framing, types and counts stay valid, so the connection mostly lives on and the
        # next PDU meets the state this one left behind.
        data = bytearray(inner)
        for _ in range(rng.randint(1, 4)):
            data[rng.choice(values)] = rng.choice((0, 0xFF, rng.randrange(256)))
        return rebuild(bytes(data))
    if choice < 0.98:
        return rebuild(mutate(rng, inner))      # truncated, grown or shrunk content in valid framing
    if choice < 0.99:
        return fix_length(mutate(rng, wire))    # any header byte, length kept consistent
    if choice < 0.995:
        return fix_length(mutate(rng, rng.choice(sequence[1:])))  # a connection PDU out of order
    return mutate(rng, wire)                    # raw: may desynchronise the stream


def _granted(client, wanted, timeout) -> tuple[int, bool]:
    """Granted Control answers (one per probe) until `wanted` or the timeout, and whether the server
    closed the connection meanwhile."""
    count = 0
    deadline = time.monotonic() + timeout
    while count < wanted:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            frame = client.frame(remaining)
        except TimeoutError:
            break
        except (Closed, OSError):
            return count, True
        if frame.kind is not FrameKind.TPKT:
            continue
        kind = _answer(frame)
        if kind == "ultimatum":
            return count, True
        if kind == share.PDUTYPE2_CONTROL:
            count += 1
    return count, False


def _answer(frame):
    """The share data type of a server frame, "ultimatum" for a goodbye, None for anything else."""
    try:
        pdu = mcs.parse_domain_pdu(x224.unwrap_data(frame.data))
    except ValueError:  # the connect response is not a domain PDU
        return None
    if isinstance(pdu, mcs.DisconnectProviderUltimatum):
        return "ultimatum"
    if not isinstance(pdu, mcs.SendDataIndication):
        return None
    try:
        return share.parse_data_pdu(pdu.data).pdu_type2
    except ValueError:  # licence, demand active: not share data
        return None


class Fuzzer:
    def __init__(self, port, sequence, active, probe):
        self.port, self.sequence, self.active, self.probe = port, sequence, active, probe
        self.lock = threading.Lock()
        self.pdus = 0
        self.connections = 0
        self.closed_by_server = 0
        self.per_phase = {}

    def _count(self, phase, pdus, connections=0, closed=0):
        with self.lock:
            self.pdus += pdus
            self.connections += connections
            self.closed_by_server += closed
            self.per_phase[phase] = self.per_phase.get(phase, 0) + pdus

    def _connect(self, upto: int) -> RdpClient:
        """A client that sent the good sequence up to (not including) PDU `upto`."""
        client = RdpClient(self.port)
        if upto >= 1:
            client.negotiate()
            client.sock.sendall(b"".join(self.sequence[1:upto]))
        if upto == len(self.sequence):  # active: read the answers up to the Font Map
            while (frame := client.frame()).kind is not FrameKind.TPKT or _answer(frame) != share.PDUTYPE2_FONTMAP:
                pass
        return client

    def early(self, phase: int, seed: int) -> None:
        """One mutated PDU of `phase` on a fresh connection; then see whether the server closes."""
        rng = random.Random(seed)
        try:
            client = self._connect(phase)
        except (OSError, Closed, AssertionError):
            # A slow server under load may drop a handshake; it is not a finding unless it crashes.
            return
        data = mutate(rng, self.sequence[phase])
        if rng.random() < 0.5:
            data = fix_length(data)
        closed = 0
        try:
            client.sock.sendall(data)
            closed = int(client.closed_by_server(0.15))
        except (OSError, Closed):
            closed = 1
        finally:
            client.close()
        self._count(PHASES[phase], 1, 1, closed)

    def active_run(self, seed: int, budget: int) -> None:
        """Batches of mutated active-phase PDUs, each followed by a probe that the server answers while
        the connection lives: a PDU counts once the answer to its probe (or the close) shows it was read."""
        rng = random.Random(seed)
        done = failures = 0
        while done < budget:
            try:
                client = self._connect(len(self.sequence))
                failures = 0
            except (OSError, Closed, AssertionError) as exc:
                failures += 1
                assert failures < 20, f"the server stopped taking connections: {exc}"
                continue
            self._count("active", 0, 1)
            try:
                while done < budget:
                    batch = b"".join(mutate_active(rng, self.active, self.sequence) + self.probe
                                     for _ in range(BATCH))
                    client.sock.sendall(batch)
                    answered, closed = _granted(client, BATCH, 5)
                    # A PDU counts once the answer to its probe shows the server read it; the one that
                    # made the server close was read too.
                    done += answered + closed
                    self._count("active", answered + closed, 0, int(closed))
                    if answered < BATCH:
                        break  # closed, or a PDU swallowed the probes after it (waiting for more bytes)
            except OSError:
                pass
            finally:
                client.close()


class GoodClient(threading.Thread):
    """Logged on all along; asks for a screen area every half second and must get it each time."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = RdpClient(port, user="good", password="x")
        self.client.activate()
        self.stop = threading.Event()
        self.updates = 0
        self.misses = []

    def run(self):
        while not self.stop.is_set():
            self.client.refresh(0, 0, 64, 64)
            try:
                received = self.client.graphics(5.0)
            except Exception as exc:  # noted, and the test fails on it
                self.misses.append(f"{type(exc).__name__}: {exc}")
                return
            if received:
                self.updates += 1
            else:
                self.misses.append("no update within 5 s")
            self.stop.wait(0.5)


def test_fuzz_every_phase_while_a_good_client_stays(vrdp):
    port = free_port()
    server = vrdp(ports=str(port), multicon=True)
    wait_for(lambda: server.status()["port"] == port, 10, "listening", [server.process])
    sequence, active, probe = record_transcript(port)
    good = GoodClient(port)
    good.start()
    fuzzer = Fuzzer(port, sequence, active, probe)
    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        jobs = [pool.submit(fuzzer.early, phase, phase * 100_000 + n)
                for n in range(EARLY_PER_PHASE) for phase in range(len(PHASES))]
        for job in jobs:
            job.result()
        remaining = TARGET_PDUS - fuzzer.pdus
        share_ = remaining // WORKERS + 1
        for job in [pool.submit(fuzzer.active_run, 7_000_000 + n, share_) for n in range(WORKERS)]:
            job.result()
    elapsed = time.monotonic() - started
    good.stop.set()
    good.join(10)
    print(f"\nfuzz: {fuzzer.pdus} PDUs read by the server over {fuzzer.connections} connections "
          f"({fuzzer.closed_by_server} closed by it) in {elapsed:.0f} s; per phase {fuzzer.per_phase}; "
          f"good client: {good.updates} updates")
    assert fuzzer.pdus >= TARGET_PDUS
    assert all(fuzzer.per_phase.get(phase, 0) >= EARLY_PER_PHASE // 2 for phase in PHASES)
    assert server.process.poll() is None, "the VRDP process died"
    assert not good.misses, good.misses[:3]
    assert good.updates >= elapsed / 2 * 0.5
    # The fuzzer's last connections are closed; the server notices each one's end in its own
    # thread, which may still be busy with what that connection asked for.
    wait_for(lambda: [c["user"] for c in server.status()["clients"]] == ["good"], 30,
             "only the good client left connected", [server.process])
    log = server.log()
    assert "Traceback" not in log and "unexpected error" not in log
    # Every connection the server closed says why in one line.
    closed_lines = len(re.findall(r"disconnected \((protocol error|socket error|logon refused)", log))
    assert closed_lines >= fuzzer.closed_by_server * 0.9, (closed_lines, fuzzer.closed_by_server)
    good.client.close()
