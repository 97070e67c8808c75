"""The VRDP process of one VM: listeners on the configured ports, one thread per RDP client (logon,
multi-connection rule, feature switches), the guest screen from the shared surface, input to the VM."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import zmq

from services.ipc import ops
from services.ipc.control import ControlError, ControlServer
from services.ipc.io import InputSender
from services.ipc.messages import DISPLAY_VERSION, unpack
from services.ipc.naming import SURFACE, endpoint, runtime_dir, shm_name
from services.ipc.shm import SharedRegion
from services.ipc.spec import LaunchSpec, SpecError
from services.ipc.surface import frame_view, read_header
from services.ipc.vrde import ConfigError, VrdeConfig
from services.vrdp.auth import (
    REFUSE,
    REPLACE,
    AuthRequest,
    FailureThrottle,
    check_logon,
    multicon_decision,
)
from services.vrdp.connection import (
    Activated,
    ClientInfoReceived,
    Connection,
    Disconnected,
    OutputSuppressed,
    RefreshRequested,
    Refused,
)
from services.vrdp.pdu import input as rdp_input
from services.vrdp.ports import Listener, bind_listener
from services.vrdp.security_policy import (
    NEGOTIATION_FAILURES,
    SecurityPolicy,
    security_policy_from,
)
from services.vrdp.tpkt import ProtocolError

log = logging.getLogger("headbox.vrdp")
CONFIGURE_TIMEOUT = 10.0            # seconds a configure request waits for the listening loop

POLL_INTERVAL = 0.02
WHEEL_STEP = 120  # one notch of a Windows wheel
# The static channels a Client/Disable* switch keeps a client from being served (none is served yet).
FEATURE_CHANNELS = {"Client/DisableAudio": "rdpsnd", "Client/DisableUSB": "vrdpusb",
                    "Client/DisableClipboard": "cliprdr", "Client/DisableRDPDR": "rdpdr"}


class LogonRefused(Exception):
    """Authentication or the multi-connection rule turned the client away; the connection closes."""


class Screen:
    """The guest screen: size and pixels from the shared surface, mode changes and damaged rectangles
    from the display channel."""

    def __init__(self, vm_id: str):
        self.vm_id = vm_id
        self._lock = threading.Lock()  # client threads share the surface mapping, made on first use
        self.region: SharedRegion | None = None

    def _map(self) -> SharedRegion | None:
        if self.region is None:
            try:
                self.region = SharedRegion.open(shm_name(self.vm_id, SURFACE))
            except OSError:
                return None
        return self.region

    def current_size(self) -> tuple[int, int] | None:
        with self._lock:
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
        with self._lock:
            region = self._map()
            if region is None:
                return None
            try:
                return frame_view(region).copy()
            except ValueError:
                return None

    def watch(self, stop: threading.Event, damaged: Callable[[list, tuple[int, int], bool], None]) -> None:
        """Display-channel subscriber: calls damaged(rects, size, mode_changed) for every message."""
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
                damaged(rects, (int(width), int(height)), bool(mode_changed))
        finally:
            socket_.close()


class ClientRegistry:
    """The connected clients under one lock: the accept loop adds them, their own threads admit and
    forget them, the display watcher and the control socket reach them all."""

    def __init__(self):
        self._lock = threading.Lock()
        self._clients: set[ClientHandler] = set()

    def add(self, client: ClientHandler) -> None:
        with self._lock:
            self._clients.add(client)

    def forget(self, client: ClientHandler) -> None:
        with self._lock:
            self._clients.discard(client)

    def connected(self) -> list[ClientHandler]:
        """Every client, logged on or not, in connection order."""
        with self._lock:
            return sorted(self._clients, key=lambda c: c.id)

    def admit(self, client: ClientHandler, config: VrdeConfig, user: str) -> None:
        """The multi-connection rule for a client that passed authentication (raises LogonRefused).
        One lock for the count and the logon, so two clients logging on at once cannot both be first."""
        with self._lock:
            others = [c for c in self._clients if c is not client and c.logged_on and not c.kicked]
            decision = multicon_decision(config.multicon, config.reusecon, len(others))
            if decision == REFUSE:
                raise LogonRefused("multiple connections are not enabled")
            if decision == REPLACE:
                for other in others:
                    other.kick("disconnected: a new client replaces it (reusecon)")
            client.user = user
            client.since = datetime.now(UTC).isoformat(timespec="seconds")

    def kick_all(self, reason: str) -> int:
        clients = self.connected()
        for client in clients:
            client.kick(reason)
        return len(clients)

    def damage_all(self, rects, size: tuple[int, int], mode_changed: bool) -> None:
        for client in self.connected():
            client.damage(rects, size, mode_changed)


class ClientHandler:
    """One client connection, run on its own thread: socket bytes into the Connection, events out."""

    def __init__(self, server: VrdpServer, sock: socket.socket, address):
        self.server = server
        self.sock = sock
        self.address = f"{address[0]}:{address[1]}"
        screen = server.screen
        # server.security: the listener's security_policy.SecurityPolicy (VRDE Security/* properties).
        self.conn = Connection(server.security.connection_config(desktop_size=screen.current_size))
        self.lock = threading.Lock()
        self.pending: list[tuple[int, int, int, int]] = []
        self.new_size: tuple[int, int] | None = None
        self.suppressed = False
        self.last_pointer: tuple[int, int] | None = None
        self.buttons = 0
        self.id = server.new_client_id()
        self.ip = str(address[0])
        self.user: str | None = None
        self.since: str | None = None
        self.features: dict[str, bool] = {}
        self.kicked: str | None = None  # why the server wants this client gone (another thread sets it)

    @property
    def logged_on(self) -> bool:
        return self.since is not None

    def describe(self) -> dict:
        disabled = sorted(name for name, on in self.features.items() if on)
        return {"id": self.id, "address": self.address, "user": self.user, "since": self.since,
                "disabled": disabled,
                "channels": {"offered": [c.name for c in self.conn.client.channels],
                             "served": [], "withheld": [FEATURE_CHANNELS[n] for n in disabled
                                                        if n in FEATURE_CHANNELS]}}

    def kick(self, reason: str) -> None:
        self.kicked = reason

    def damage(self, rects, size: tuple[int, int], mode_changed: bool) -> None:
        with self.lock:
            # _paint compares with the client's size, so a missed mode change is caught later too.
            self.new_size = size
            self.pending.extend(rects)

    def run(self) -> None:
        log.info("client %s connected", self.address)
        reason = "closed"
        goodbye = True
        try:
            self._loop()
        except LogonRefused as exc:
            # As VirtualBox: the connection just closes. The licence and Demand Active queued with the
            # Client Info are dropped, and with them the TLS stream's order, so no goodbye either.
            reason = f"logon refused: {exc}"
            goodbye = False
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
        except OSError as exc:
            reason = f"socket error: {exc}"
        except Exception:
            log.exception("client %s: unexpected error", self.address)
            reason = "internal error"
        finally:
            try:
                if goodbye:
                    self.conn.close()
                    self.sock.sendall(self.conn.data_to_send())
            except (OSError, ProtocolError):
                pass
            self.sock.close()
            self.server.clients.forget(self)
            log.info("client %s disconnected (%s)", self.address, reason)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _loop(self) -> None:
        while not self.server.stopping.is_set() and not self.conn.closed:
            if self.kicked:
                log.info("client %s: %s", self.address, self.kicked)
                return
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
            self._logon(event)
        elif isinstance(event, RefreshRequested):
            with self.lock:
                self.pending.extend(event.rects)
        elif isinstance(event, OutputSuppressed):
            self.suppressed = event.suppressed
            if not event.suppressed:
                with self.lock:
                    self.pending = [(0, 0, self.conn.width, self.conn.height)]
        elif isinstance(event, Refused):
            log.info("client %s refused: %s (it requested protocols 0x%X, security method %s)", self.address,
                     NEGOTIATION_FAILURES.get(event.code, f"failure code {event.code}"),
                     event.requested_protocols, self.server.security.method)
        elif isinstance(event, Disconnected):
            log.info("client %s: %s", self.address, event.reason)
        elif self.logged_on and not self.features.get("Client/DisableInput"):
            self._input(event)

    def _logon(self, event: ClientInfoReceived) -> None:
        """Authenticate before any graphics go out (the info PDU precedes activation), then apply the
        multi-connection rule; the configuration and feature switches are read once, here."""
        if self.logged_on:
            raise ProtocolError("a second Client Info PDU")
        server = self.server
        config = server.config
        delay = server.throttle.delay(self.ip, time.monotonic())
        if delay:
            log.info("client %s: %.0f s delay after failed logons from %s", self.address, delay, self.ip)
            time.sleep(delay)  # this client's thread only: the others carry on
        request = AuthRequest(config.vm_uuid, event.user_name, event.password, event.domain, self.id, config,
                              self.ip)
        granted = check_logon(request)
        server.throttle.record(self.ip, granted, time.monotonic())
        if not granted:
            raise LogonRefused("access denied")
        server.clients.admit(self, config, event.user_name)
        self.features = config.client_features()
        disabled = [name for name, on in self.features.items() if on]
        if disabled:
            log.info("client %s: %s", self.address, ", ".join(disabled))

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
        elif isinstance(event, rdp_input.SyncEvent):
            # Scroll, Num and Caps Lock have the same bits in TS_SYNC_* and on the input channel.
            self.server.send_input(sender.sync_locks, event.toggle_flags & 0x07)

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
        if not rects or self.suppressed or self.features.get("Client/DisableDisplay"):
            return
        frame = self.server.screen.snapshot()
        if frame is None:  # no VM screen (yet): show black rather than nothing
            frame = np.zeros((self.conn.height, self.conn.width, 4), np.uint8)
        self.conn.send_bitmaps(frame, rects)


class VrdpServer:
    def __init__(self, vm_id: str, config: VrdeConfig):
        self.vm_id = vm_id
        self.config = config
        self.security: SecurityPolicy | None = None
        self.listener: Listener | None = None
        self._listener_key = None
        self.screen = Screen(vm_id)
        self.clients = ClientRegistry()
        self.input = InputSender(endpoint(vm_id, "input"))
        # No VM on the other end (or a stuck one) must not block a client thread: drop input instead.
        self.input.socket.setsockopt(zmq.SNDTIMEO, 0)
        self.input_lock = threading.Lock()
        self.stopping = threading.Event()
        self.throttle = FailureThrottle()
        self._ids = itertools.count(1)
        self._dropped_input = 0
        self.control: ControlServer | None = None
        # Settings from the control thread reach the listening loop through a queue and a wakeup.
        self._new_configs: queue.SimpleQueue = queue.SimpleQueue()
        self._wakeup_reader, self._wakeup_writer = socket.socketpair()
        self._apply_listener(config)

    @property
    def port(self) -> int:
        """The bound port, 0 when none of the configured ports was free (VirtualBox's convention)."""
        return self.listener.port if self.listener is not None else 0

    def new_client_id(self) -> int:
        return next(self._ids)

    # --- configuration ------------------------------------------------------------------------------

    def _apply_listener(self, config: VrdeConfig) -> None:
        key = config.listener_key()
        if key == self._listener_key:
            return
        self._listener_key = key
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if not config.enabled:
            log.info("VRDE is disabled: not listening")
            return
        # An unusable certificate is logged there and refuses TLS clients only (SSL_CERT_NOT_ON_SERVER).
        self.security = security_policy_from(config.properties,
                                             config.state_dir or os.path.join(runtime_dir(self.vm_id), "vrdp"))
        self.listener = bind_listener(config.ports, config.address)
        if self.listener is None:
            log.error("VirtualBox Remote Desktop Extension server can't bind to the port(s): %s", config.ports)

    def reload(self, config: VrdeConfig) -> None:
        """New VRDE settings (the configure request): new clients get their auth, multicon and
        features; listener changes rebind."""
        log.info("VRDE configuration changed")
        was_enabled = self.config.enabled
        self.config = config
        self._apply_listener(config)
        if was_enabled and not config.enabled:
            self.disconnect_all()

    # --- clients ------------------------------------------------------------------------------------

    def send_input(self, method, *args) -> None:
        with self.input_lock:  # one ZeroMQ socket, several client threads
            try:
                method(*args)
            except zmq.Again:
                self._dropped_input += 1
                if self._dropped_input in (1, 100) or self._dropped_input % 10000 == 0:
                    log.warning("input dropped: the VM does not take it (%d events so far)", self._dropped_input)

    def status(self) -> dict:
        return {"pid": os.getpid(), "port": self.port, "enabled": self.config.enabled,
                "clients": [c.describe() for c in self.clients.connected() if c.logged_on]}

    def disconnect_all(self) -> int:
        return self.clients.kick_all("disconnected by the server")

    def handlers(self) -> dict:
        """What the control socket serves (services/ipc/ops.py)."""
        return {ops.Status: lambda _request: self.status(),
                ops.Disconnect: lambda _request: {"disconnected": self.disconnect_all()},
                ops.Configure: self._configure}

    def _configure(self, request) -> None:
        """New settings, handed to the listening loop (which owns the listener) and applied
        before the reply."""
        try:
            config = VrdeConfig.from_dict(request.config)
        except (ConfigError, TypeError) as exc:
            raise ControlError(f"VRDE configuration not applied: {exc}") from None
        applied = threading.Event()
        self._new_configs.put((config, applied))
        self._wakeup_writer.send(b"!")
        if not applied.wait(CONFIGURE_TIMEOUT):
            raise ControlError("VRDE configuration not applied: the server is busy; it will apply it later")

    # --- the listening loop -------------------------------------------------------------------------

    def serve_forever(self) -> None:
        threading.Thread(target=self.screen.watch, args=(self.stopping, self.clients.damage_all), name="display",
                         daemon=True).start()
        log.info("VRDP server for VM %s started (port %d)", self.vm_id, self.port)
        while not self.stopping.is_set():
            sockets = list(self.listener.sockets) if self.listener is not None else []
            readable, _, _ = select.select([*sockets, self._wakeup_reader], [], [], 0.5)
            if self._wakeup_reader in readable:
                self._wakeup_reader.recv(4096)
                self._apply_new_configs()
                continue                 # the listener may have changed
            for listening in readable:
                self._accept(listening)

    def _apply_new_configs(self) -> None:
        while not self._new_configs.empty():
            config, applied = self._new_configs.get()
            self.reload(config)
            applied.set()

    def _accept(self, listening: socket.socket) -> None:
        try:
            sock, address = listening.accept()
        except OSError:  # the client gave up already, or the listener was just closed
            return
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client = ClientHandler(self, sock, address)
        except Exception as exc:
            log.error("client %s: cannot start: %s: %s", address, type(exc).__name__, exc)
            sock.close()
            return
        self.clients.add(client)
        threading.Thread(target=client.run, name=f"rdp-{client.id}", daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        if self.control is not None:
            self.control.close()
        if self.listener is not None:
            self.listener.close()
        self.input.close()
        self._wakeup_reader.close()
        self._wakeup_writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.vrdp", description="RDP server of one VM")
    parser.add_argument("--spec", required=True, help="the VM's launch spec (services/ipc/spec.py)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        spec = LaunchSpec.load(args.spec)
        if spec.vrde is None:
            raise SpecError(f"VM {spec.vm_id} has no RDP server in its launch spec")
        runtime_dir(spec.vm_id)
    except (SpecError, ValueError) as exc:
        print(f"VRDP: error: {exc}", file=sys.stderr)
        return 1
    server = VrdpServer(spec.vm_id, spec.vrde)
    try:
        server.control = ControlServer(endpoint(spec.vm_id, "control-vrdp"), server.handlers())
        server.control.serve_in_thread("vrdp-control")
    except zmq.ZMQError as exc:
        print(f"VRDP: error: cannot open the control socket: {exc}", file=sys.stderr)
        server.close()
        return 1
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
