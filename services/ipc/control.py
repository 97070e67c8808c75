"""Every VM process's control socket: typed requests, one server, one client with typed errors.

A request is a frozen dataclass registered under its operation name (services/ipc/ops.py); on the
wire it is the msgpack map {"v": CONTROL_VERSION, "op": name, **fields} and the reply is
{"ok": True, **fields} or {"ok": False, "error": "<one line for the user>"}. crosvm's typed
`Command`/`CommandResult` is the model: a process declares what it serves by the handlers it
gives its ControlServer; a caller learns of a refusal as ControlError, of silence as
ControlUnavailable."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

import zmq

from services.ipc.messages import ProtocolError, pack, unpack
from services.ipc.naming import restrict_socket

log = logging.getLogger("headbox.ipc")

CONTROL_VERSION = 2
_REQUESTS: dict[str, type] = {}


class ControlError(Exception):
    """The process refused or failed the request; the message is its one line for the user."""


class ControlUnavailable(ControlError):
    """The process did not answer in time (it is gone, or stuck)."""


def request(op: str):
    """Class decorator: the class becomes a frozen dataclass sent as operation `op`."""
    def register(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        cls.op = op
        if _REQUESTS.setdefault(op, cls) is not cls:
            raise ValueError(f"two control requests named {op!r}")
        return cls
    return register


def pack_request(message) -> bytes:
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    return pack({"v": CONTROL_VERSION, "op": message.op, **fields})


def unpack_request(data: bytes):
    """The request object; ProtocolError (one line) for anything that is not a known request."""
    try:
        raw = unpack(data)
    except Exception:          # msgpack raises several types for garbage
        raise ProtocolError("the control request is not msgpack") from None
    if not isinstance(raw, dict) or raw.get("v") != CONTROL_VERSION:
        raise ProtocolError(f"expected a control request of version {CONTROL_VERSION}")
    cls = _REQUESTS.get(raw.get("op"))
    if cls is None:
        raise ProtocolError(f"unknown control operation {raw.get('op')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(raw) - names - {"v", "op"}
    if extra:
        raise ProtocolError(f"{cls.op}: unknown field(s) {', '.join(sorted(map(str, extra)))}")
    try:
        return cls(**{k: v for k, v in raw.items() if k in names})
    except TypeError:
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in raw and f.default is dataclasses.MISSING]
        raise ProtocolError(f"{cls.op}: missing field(s) {', '.join(missing)}") from None


class ControlServer:
    """One process's REP socket (0600). `handlers` maps request classes to functions that take the
    request and return the reply's fields (a dict, or None) or raise ControlError. Serve it from a
    poller of your own (socket, handle_one) or from its own thread (serve_in_thread)."""

    def __init__(self, control_endpoint: str, handlers: dict[type, Callable]):
        self.handlers = dict(handlers)
        self.socket = zmq.Context.instance().socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(control_endpoint)
        restrict_socket(control_endpoint)
        self._closing = False
        self._thread: threading.Thread | None = None

    def handle_one(self) -> None:
        self.socket.send(pack(self.answer(self.socket.recv())))

    def answer(self, data: bytes) -> dict:
        """The reply to one request's bytes; nothing a caller sends raises out of here."""
        try:
            message = unpack_request(data)
            handler = self.handlers.get(type(message))
            if handler is None:
                raise ControlError(f"this process does not serve {message.op}")
            return {"ok": True, **(handler(message) or {})}
        except (ControlError, ProtocolError) as error:
            return {"ok": False, "error": str(error)}
        except Exception as error:   # a failing request must not take the process down
            log.exception("control request failed")
            return {"ok": False, "error": str(error) or type(error).__name__}

    def serve_in_thread(self, name: str) -> None:
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # A ZeroMQ socket belongs to one thread: it is served and closed here.
        while not self._closing:
            if self.socket.poll(100):
                self.handle_one()
        self.socket.close()

    def close(self) -> None:
        self._closing = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        elif self._thread is None:
            self.socket.close()


class ControlClient:
    """The caller's side of one process's control socket."""

    def __init__(self, control_endpoint: str, timeout_ms: int = 15000):
        self.endpoint = control_endpoint
        self.timeout_ms = timeout_ms
        self.socket = self._connect()

    def _connect(self):
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 10)   # a process binding its socket right now answers sooner
        sock.connect(self.endpoint)
        return sock

    def call(self, message, timeout_ms: int | None = None) -> dict:
        """The reply's fields; ControlError if the process refused, ControlUnavailable if it did
        not answer within the timeout."""
        self.socket.send(pack_request(message))
        if not self.socket.poll(self.timeout_ms if timeout_ms is None else timeout_ms):
            # A REQ socket that missed its reply cannot send again: start a fresh one.
            self.socket.close()
            self.socket = self._connect()
            raise ControlUnavailable(f"no answer to {message.op} within "
                                     f"{(self.timeout_ms if timeout_ms is None else timeout_ms) / 1000:g} s")
        reply = unpack(self.socket.recv())
        if not reply.pop("ok", False):
            raise ControlError(str(reply.get("error", f"{message.op} failed")))
        return reply

    def close(self) -> None:
        self.socket.close()


def call(control_endpoint: str, message, timeout_ms: int = 15000) -> dict:
    """One request on a fresh connection."""
    client = ControlClient(control_endpoint, timeout_ms)
    try:
        return client.call(message)
    finally:
        client.close()
