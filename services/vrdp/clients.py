"""The clients of one RDP server: a thread per connection (ClientHandler: socket bytes into the
Connection, events out, logon, input, painting) and the registry that admits them (ClientRegistry)."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from services.ipc.vrde import ConnectionLimits, VrdeConfig
from services.vrdp.admission import make_room
from services.vrdp.auth import (
    REFUSE,
    REPLACE,
    AuthRequest,
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
from services.vrdp.security_policy import (
    NEGOTIATION_FAILURES,
)
from services.vrdp.tpkt import ProtocolError

if TYPE_CHECKING:
    from services.vrdp.server import VrdpServer

log = logging.getLogger("headbox.vrdp")

POLL_INTERVAL = 0.02              # seconds between paints of a logged-on client
WHEEL_STEP = 120  # one notch of a Windows wheel


FEATURE_CHANNELS = {"Client/DisableAudio": "rdpsnd", "Client/DisableUSB": "vrdpusb",
                    "Client/DisableClipboard": "cliprdr", "Client/DisableRDPDR": "rdpdr"}


class LogonRefused(Exception):
    """Authentication or the multi-connection rule turned the client away; the connection closes."""


class TooSlow(Exception):
    """A connection did not log on within Limits/LogonTimeout, or stayed silent for
    Limits/HandshakeStepTimeout before it did."""


class ClientRegistry:
    """The connected clients under one lock: the accept loop adds them, their own threads admit and
    forget them, the display watcher and the control socket reach them all."""

    def __init__(self):
        self._lock = threading.Lock()
        self._clients: set[ClientHandler] = set()

    def add(self, client: ClientHandler, limits: ConnectionLimits) -> bool:
        """Registers a new connection if the limits let it in, closing idle ones to make room."""
        with self._lock:
            admission = make_room(limits, list(self._clients), client.ip)
            for other in admission.close:
                other.kick("disconnected: too many connections waiting to log on", wake=True)
            if admission.accept:
                self._clients.add(client)
            return admission.accept

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
        self.accepted_at = self.last_heard = time.monotonic()
        self.limits = server.config.limits()

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

    def kick(self, reason: str, wake: bool = False) -> None:
        """Ends the connection at its thread's next look; `wake` ends a wait for data at once."""
        self.kicked = reason
        if wake:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

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
        except TooSlow as exc:
            reason = str(exc)
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
        poller = select.poll()          # not select(): a flood of connections has fds past 1023
        poller.register(self.sock, select.POLLIN)
        while not self.server.stopping.is_set() and not self.conn.closed:
            if self.kicked:
                log.info("client %s: %s", self.address, self.kicked)
                return
            # Until the logon nothing is painted: sleep until data, a kick or a deadline.
            ready = poller.poll(1000 * (POLL_INTERVAL if self.logged_on else self._wait_for_logon()))
            if self.kicked:
                continue
            if ready:
                data = self.sock.recv(65536)
                self.last_heard = time.monotonic()
                for event in self.conn.receive(data):
                    self._event(event)
                self._flush()
            if self.conn.active:
                self._paint()
                self._flush()

    def _wait_for_logon(self) -> float:
        """Seconds to wait for data before the logon; TooSlow once a deadline has passed."""
        now = time.monotonic()
        limits = self.limits
        if now - self.accepted_at >= limits.logon_timeout:
            raise TooSlow(f"no logon within {limits.logon_timeout:g} s")
        if now - self.last_heard >= limits.step_timeout:
            raise TooSlow(f"silent for {limits.step_timeout:g} s before the logon")
        return min(self.accepted_at + limits.logon_timeout, self.last_heard + limits.step_timeout) - now

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
        throttle = server.throttle
        request = AuthRequest(config.vm_uuid, event.user_name, event.password, event.domain, self.id, config,
                              self.ip)
        with throttle.turn(self.ip, event.user_name) as ours:
            if not ours:
                log.info("AUTH: Access denied: logons from %s or for this user queue up (refused unchecked)",
                         self.ip)
                raise LogonRefused("too many logons at once")
            verdict = throttle.verdict(self.ip, time.time())
            if verdict.locked_for:
                log.info("AUTH: Access denied: %s is locked out after failed logons for %.0f more s "
                         "(refused unchecked)", self.ip, verdict.locked_for)
                raise LogonRefused("locked out after failed logons")
            if verdict.delay:
                log.info("client %s: %.0f s delay after failed logons from %s", self.address, verdict.delay,
                         self.ip)
                time.sleep(verdict.delay)  # this client's thread only: the others carry on
            granted = check_logon(request)
            throttle.record(self.ip, granted, time.time())
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
