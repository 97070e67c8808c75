"""The VRDP process of one VM: listeners on the configured ports, one thread per RDP client (logon,
multi-connection rule, feature switches), the guest screen from the shared surface, input to the VM."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import queue
import selectors
import socket
import sys
import threading
from collections.abc import Callable

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
from services.vrdp import log_text
from services.vrdp.auth import (
    FailureThrottle,
)
from services.vrdp.clients import ClientHandler, ClientRegistry
from services.vrdp.ports import Listener, bind_listener
from services.vrdp.security_policy import (
    SecurityPolicy,
    security_policy_from,
)

log = logging.getLogger("headbox.vrdp")
CONFIGURE_TIMEOUT = 10.0            # seconds a configure request waits for the listening loop

# The static channels a Client/Disable* switch keeps a client from being served (none is served yet).
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
        self.throttle = FailureThrottle(os.path.join(self.state_dir(config), "logon-failures.json"))
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

    def state_dir(self, config: VrdeConfig) -> str:
        """Where the server keeps its certificate and logon throttle (0700)."""
        path = config.state_dir or os.path.join(runtime_dir(self.vm_id), "vrdp")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

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
        self.security = security_policy_from(config.properties, self.state_dir(config))
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
            readable = [key.fileobj for key, _ in _wait_readable([*sockets, self._wakeup_reader], 0.5)]
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
        if not self.clients.add(client, client.limits):
            log.info("client %s refused: %d connections, all logged on (Limits/MaxConnections)",
                     client.address, client.limits.max_connections)
            sock.close()
            return
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


def _wait_readable(sockets, timeout: float):
    """selectors, not select.select: listeners rebound while many clients are connected get fds
    past 1023."""
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        return selector.select(timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.vrdp", description="RDP server of one VM")
    parser.add_argument("--spec", required=True, help="the VM's launch spec (services/ipc/spec.py)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    log_text.configure(args.log_level)
    try:
        spec = LaunchSpec.load_for_run(args.spec)
        if spec.vrde is None:
            raise SpecError(f"VM {spec.vm_id} has no RDP server in its launch spec")
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
