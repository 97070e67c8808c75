"""The VRDP process of one VM: a TCP listener with one thread per RDP client, the guest screen read from
the shared surface on each display-channel update, and client keyboard/mouse sent to the VM's input."""

from __future__ import annotations

import argparse
import logging
import os
import select
import socket
import sys
import threading

import zmq

from services.devices.display.surface import frame_view, read_header
from services.ipc.io import InputSender
from services.ipc.messages import DISPLAY_VERSION, unpack
from services.ipc.naming import endpoint, runtime_dir, shm_name
from services.ipc.shm import SharedRegion
from services.vrdp import tls
from services.vrdp.connection import (
    Activated,
    ClientInfoReceived,
    Connection,
    ConnectionConfig,
    Disconnected,
    OutputSuppressed,
    RefreshRequested,
    Refused,
)
from services.vrdp.pdu import input as rdp_input
from services.vrdp.tpkt import ProtocolError

log = logging.getLogger("headbox.vrdp")

POLL_INTERVAL = 0.02
WHEEL_STEP = 120  # one notch of a Windows wheel


class Screen:
    """The guest screen as the display channel describes it; clients read pixels from the surface."""

    def __init__(self, vm_id: str):
        self.vm_id = vm_id
        self.lock = threading.Lock()
        self.region: SharedRegion | None = None
        self.size: tuple[int, int] | None = None
        self.clients: set[ClientHandler] = set()

    def _map(self) -> SharedRegion | None:
        if self.region is None:
            try:
                self.region = SharedRegion.open(shm_name(self.vm_id, "surface"))
            except OSError:
                return None
        return self.region

    def current_size(self) -> tuple[int, int] | None:
        with self.lock:
            region = self._map()
            if region is None:
                return None
            try:
                header = read_header(region)
            except ValueError:
                return None
            return (header.width, header.height) if header.width and header.height else None

    def snapshot(self):
        """A copy of the current frame (the vCPU keeps drawing into the shared one)."""
        with self.lock:
            region = self._map()
            if region is None:
                return None
            try:
                return frame_view(region).copy()
            except ValueError:
                return None

    def watch(self, stop: threading.Event) -> None:
        """Display-channel subscriber: hands every mode change and damaged rectangle to the clients."""
        socket_ = zmq.Context.instance().socket(zmq.SUB)
        socket_.setsockopt(zmq.LINGER, 0)
        socket_.setsockopt(zmq.SUBSCRIBE, b"")
        socket_.connect(endpoint(self.vm_id, "display"))
        try:
            while not stop.is_set():
                if not socket_.poll(200):
                    continue
                try:
                    message = unpack(socket_.recv())
                    if message[0] != DISPLAY_VERSION:
                        raise ValueError(f"display message version {message[0]}")
                    _, _, width, height, _, mode_changed, rects = message[:7]
                    rects = [tuple(int(v) for v in r) for r in rects]
                except (ValueError, TypeError, IndexError) as exc:
                    log.warning("bad display message ignored: %s", exc)
                    continue
                with self.lock:
                    self.size = (int(width), int(height))
                    clients = list(self.clients)
                for client in clients:
                    client.damage(rects, (int(width), int(height)), bool(mode_changed))
        finally:
            socket_.close()


class ClientHandler:
    """One client connection, run on its own thread: socket bytes into the Connection, events out."""

    def __init__(self, server: VrdpServer, sock: socket.socket, address):
        self.server = server
        self.sock = sock
        self.address = f"{address[0]}:{address[1]}"
        screen = server.screen
        self.conn = Connection(ConnectionConfig(server.tls_context, desktop_size=screen.current_size))
        self.lock = threading.Lock()
        self.pending: list[tuple[int, int, int, int]] = []
        self.new_size: tuple[int, int] | None = None
        self.suppressed = False
        self.last_pointer: tuple[int, int] | None = None
        self.buttons = 0

    def damage(self, rects, size: tuple[int, int], mode_changed: bool) -> None:
        with self.lock:
            # _paint compares with the client's size, so a missed mode change is caught later too.
            self.new_size = size
            self.pending.extend(rects)

    def run(self) -> None:
        log.info("client %s connected", self.address)
        reason = "closed"
        try:
            self._loop()
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
        except OSError as exc:
            reason = f"socket error: {exc}"
        except Exception:
            log.exception("client %s: unexpected error", self.address)
            reason = "internal error"
        finally:
            try:
                self.conn.close()
                self.sock.sendall(self.conn.data_to_send())
            except (OSError, ProtocolError):
                pass
            self.sock.close()
            self.server.forget(self)
            log.info("client %s disconnected (%s)", self.address, reason)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _loop(self) -> None:
        while not self.server.stopping.is_set() and not self.conn.closed:
            readable, _, _ = select.select([self.sock], [], [], POLL_INTERVAL)
            if readable:
                data = self.sock.recv(65536)
                for event in self.conn.receive(data):
                    self._event(event)
                self._flush()
            if self.conn.active:
                self._paint()
                self._flush()

    def _event(self, event) -> None:
        if isinstance(event, Activated):
            log.info("client %s active at %dx%d, %d bpp", self.address, event.width, event.height, event.bpp)
            with self.lock:
                self.pending = [(0, 0, event.width, event.height)]
        elif isinstance(event, ClientInfoReceived):
            log.info("client %s: user %r, domain %r, client %r", self.address, event.user_name,
                     event.domain, event.client_name)
        elif isinstance(event, RefreshRequested):
            with self.lock:
                self.pending.extend(event.rects)
        elif isinstance(event, OutputSuppressed):
            self.suppressed = event.suppressed
            if not event.suppressed:
                with self.lock:
                    self.pending = [(0, 0, self.conn.width, self.conn.height)]
        elif isinstance(event, Refused):
            log.info("client %s refused: it offers no TLS (protocols 0x%X)", self.address,
                     event.requested_protocols)
        elif isinstance(event, Disconnected):
            log.info("client %s: %s", self.address, event.reason)
        else:
            self._input(event)

    def _input(self, event) -> None:
        sender = self.server.input
        if isinstance(event, rdp_input.KeyboardEvent):
            if event.extended1:
                # Pause: E1 1D 45; the input channel carries the E0 prefix only, so send the pair plain.
                self.server.send_input(sender.key, 0x1D, False, not event.release)
                self.server.send_input(sender.key, 0x45, False, not event.release)
            else:
                self.server.send_input(sender.key, event.scancode, event.extended, not event.release)
        elif isinstance(event, rdp_input.MouseEvent):
            self._mouse(event.x, event.y, event)
        elif isinstance(event, rdp_input.ExtendedMouseEvent):
            self._mouse(event.x, event.y, None)

    def _mouse(self, x: int, y: int, event: rdp_input.MouseEvent | None) -> None:
        # The guest has a relative PS/2 mouse: send the motion since the last position we reported.
        dx = dy = dz = 0
        if self.last_pointer is not None:
            dx, dy = x - self.last_pointer[0], y - self.last_pointer[1]
        self.last_pointer = (x, y)
        if event is not None:
            button = event.button
            if button is not None and not event.flags & (rdp_input.PTR_FLAGS_WHEEL | rdp_input.PTR_FLAGS_HWHEEL):
                bit = {1: 1, 2: 2, 3: 4}[button]
                self.buttons = self.buttons | bit if event.pressed else self.buttons & ~bit
            if event.wheel:
                dz = max(1, abs(event.wheel) // WHEEL_STEP) * (1 if event.wheel > 0 else -1)
        self.server.send_input(self.server.input.mouse, dx, dy, dz, self.buttons)

    def _paint(self) -> None:
        with self.lock:
            new_size, self.new_size = self.new_size, None
            rects, self.pending = self.pending, []
        if new_size is not None and new_size != (self.conn.width, self.conn.height):
            self.conn.resize(*new_size)
            return  # the full screen follows the reactivation
        if not rects or self.suppressed:
            return
        frame = self.server.screen.snapshot()
        if frame is not None:
            self.conn.send_bitmaps(frame, rects)


class VrdpServer:
    def __init__(self, vm_id: str, address: str, port: int, tls_context):
        self.vm_id = vm_id
        self.tls_context = tls_context
        self.screen = Screen(vm_id)
        self.input = InputSender(endpoint(vm_id, "input"))
        self.input_lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.create_server((address, port), reuse_port=False)
        self.port = self.listener.getsockname()[1]

    def send_input(self, method, *args) -> None:
        with self.input_lock:  # one ZeroMQ socket, several client threads
            method(*args)

    def forget(self, client: ClientHandler) -> None:
        with self.screen.lock:
            self.screen.clients.discard(client)

    def serve_forever(self) -> None:
        threading.Thread(target=self.screen.watch, args=(self.stopping,), name="display", daemon=True).start()
        log.info("VRDP server for VM %s listening on %s:%d", self.vm_id, *self.listener.getsockname()[:2])
        self.listener.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                sock, address = self.listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = ClientHandler(self, sock, address)
            with self.screen.lock:
                self.screen.clients.add(client)
            threading.Thread(target=client.run, name=f"rdp-{address[1]}", daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.input.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.vrdp", description="RDP server of one VM")
    parser.add_argument("--vm-id", required=True)
    parser.add_argument("--port", type=int, default=3389)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--state-dir", help="where the self-signed TLS certificate is kept (0600)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state_dir = args.state_dir or os.path.join(runtime_dir(args.vm_id), "vrdp")
    try:
        context = tls.create_server_context(tls.resolve_credentials(state_dir=state_dir))
    except (tls.TlsConfigError, OSError) as exc:
        print(f"VRDP: error: {exc}", file=sys.stderr)
        return 1
    try:
        server = VrdpServer(args.vm_id, args.address, args.port, context)
    except OSError as exc:
        print(f"VRDP: error: cannot listen on {args.address}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
