"""The RDP server's control socket (`control-vrdp`, 0600): `status` (pid, bound port, logged-on clients)
and `disconnect` (every client), for the manager and for teleporting. Replies as every service's: {"ok", ...}."""

from __future__ import annotations

import logging
import threading

import zmq

from services.ipc.messages import CONTROL_VERSION, pack, unpack
from services.ipc.naming import restrict_socket

log = logging.getLogger("headbox.vrdp")


class ControlServer:
    """A REP socket served by its own thread; `target` has status() -> dict and disconnect_all() -> int."""

    def __init__(self, target, control_endpoint: str):
        self.target = target
        self.closing = False
        self.socket = zmq.Context.instance().socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(control_endpoint)
        restrict_socket(control_endpoint)
        self.thread = threading.Thread(target=self._serve, name="vrdp-control", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        # The socket is used by this thread only (ZeroMQ sockets are not thread-safe), and closed here.
        while not self.closing:
            if not self.socket.poll(100):
                continue
            try:
                reply = self.handle(self.socket.recv())
            except Exception as error:  # a bad request must not take the server down
                log.error("control request failed: %s: %s", type(error).__name__, error)
                reply = {"ok": False, "error": str(error) or type(error).__name__}
            self.socket.send(pack(reply))
        self.socket.close()

    def handle(self, data: bytes) -> dict:
        try:
            request = unpack(data)
        except Exception:  # msgpack raises several types for garbage
            return {"ok": False, "error": "the control request is not msgpack"}
        if not isinstance(request, dict) or request.get("v") != CONTROL_VERSION:
            return {"ok": False, "error": f"expected a control request of version {CONTROL_VERSION}"}
        op = request.get("op")
        if op == "status":
            return {"ok": True, **self.target.status()}
        if op == "disconnect":
            return {"ok": True, "disconnected": self.target.disconnect_all()}
        return {"ok": False, "error": f"unknown control operation {op!r}"}

    def close(self) -> None:
        self.closing = True
        self.thread.join(5)
