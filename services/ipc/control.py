"""The client side of a VM process's control socket (messages.Control): one request, one reply.

Kept apart from the processes it talks to, so that a caller (the manager, a teleport) does not
import an accelerator to send a request."""

from __future__ import annotations

import zmq

from services.ipc.messages import CONTROL_VERSION, pack, unpack


class ControlClient:
    """The manager's (and tests') side of a service's control socket."""

    def __init__(self, control_endpoint: str, timeout_ms: int = 15000):
        self.socket = zmq.Context.instance().socket(zmq.REQ)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVTIMEO, timeout_ms)
        self.socket.connect(control_endpoint)

    def request(self, op: str, **fields) -> dict:
        self.socket.send(pack({"v": CONTROL_VERSION, "op": op, **fields}))
        return unpack(self.socket.recv())

    def close(self) -> None:
        self.socket.close()
