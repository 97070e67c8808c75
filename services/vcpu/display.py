"""The vCPU process's display loop: renders the VGA into the shared surface ~30 times a second
while someone watches, and publishes mode changes and damaged rectangles on the display channel."""

from __future__ import annotations

import logging
import threading
import time

import zmq

from services.ipc.messages import DISPLAY_VERSION, pack
from services.ipc.naming import restrict_socket

log = logging.getLogger("headbox.vcpu.display")

FRAME_INTERVAL = 1 / 30
KEEPALIVE = 1.0        # a message this often even without damage, so late joiners learn the mode


class DisplayPublisher:
    """XPUB on the display endpoint: it knows whether anyone subscribes and stays idle if not."""

    def __init__(self, surface, endpoint: str, lock: threading.Lock | None = None,
                 context: zmq.Context | None = None):
        self.surface = surface
        self.lock = lock or threading.Lock()
        self.socket = (context or zmq.Context.instance()).socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.socket.bind(endpoint)
        restrict_socket(endpoint)
        self.subscribers = 0
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="display", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        last_sent = 0.0
        while not self.closed:
            started = time.monotonic()
            while self.socket.poll(0):              # subscription changes: b"\x01..." / b"\x00..."
                event = self.socket.recv()
                self.subscribers += 1 if event[:1] == b"\x01" else -1
                last_sent = 0.0                     # a newcomer gets the mode at once
            if self.subscribers > 0:
                try:
                    with self.lock:
                        update = self.surface.refresh()
                    if update.rects or update.mode_changed or started - last_sent >= KEEPALIVE:
                        self.socket.send(pack([DISPLAY_VERSION, update.sequence, update.width,
                                               update.height, update.bpp, update.mode_changed,
                                               [list(r) for r in update.rects]]))
                        last_sent = started
                except Exception:
                    log.exception("display refresh failed")
            time.sleep(max(0.0, FRAME_INTERVAL - (time.monotonic() - started)))
        self.socket.close()

    def close(self) -> None:
        self.closed = True
        self.thread.join(timeout=2)
