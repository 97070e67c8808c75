"""The VM's teleport program (`python -m services.teleport --spec PATH`): a supervised process of the
VM's group that moves the VM's state (guest memory, processor and device state) out of and into the
other processes, to another host (teleport) or to a file (savestate), so that no guest memory
streams through the manager. One task at a time, started by a request on its control socket
(`control-teleport`) and followed with `status`."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from services.ipc import ops
from services.ipc.control import ControlError, ControlServer
from services.ipc.naming import endpoint
from services.ipc.spec import LaunchSpec
from services.teleport import statefile
from services.teleport.hardware import hardware_config
from services.teleport.source import teleport_out
from services.teleport.target import teleport_in
from services.teleport.vm import TeleportError

log = logging.getLogger("headbox.teleport")


@dataclass
class Task:
    name: str
    percent: int = 0
    done: bool = False
    result: dict | None = None
    error: str | None = None
    error_kind: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def report(self, percent: int) -> None:
        self.percent = max(self.percent, min(100, int(percent)))

    def run(self, work: Callable[[Callable[[int], None]], dict]) -> None:
        try:
            self.result = work(self.report)
            self.percent = 100
        except TeleportError as error:
            self.error = str(error)
            self.error_kind = ("file" if isinstance(error, statefile.SaveFailed) else
                               "state" if isinstance(error, statefile.SavedStateError) else "teleport")
        except Exception as error:       # reported to the manager, and the program serves on
            log.exception("%s failed", self.name)
            self.error, self.error_kind = f"{self.name} failed: {error}", "teleport"
        if self.error:
            log.warning("%s: %s", self.name, self.error)
        self.done = True

    def view(self) -> dict:
        return {"task": self.name, "percent": self.percent, "done": self.done, "result": self.result,
                "error": self.error, "error_kind": self.error_kind}


class StateMover:
    def __init__(self, spec: LaunchSpec):
        self.vm_id = spec.vm_id
        self.config = hardware_config(spec)
        self.task: Task | None = None
        self._lock = threading.Lock()

    def handlers(self) -> dict:
        vm_id, config = self.vm_id, self.config
        return {
            ops.Status: lambda _request: self.status(),
            ops.SaveState: lambda r: self._begin(
                "savestate", lambda report: statefile.save_vm(vm_id, config, r.path, report)),
            ops.RestoreState: lambda r: self._begin(
                "restore", lambda report: statefile.restore_vm(vm_id, config, r.path, report)),
            ops.TeleportOut: lambda r: self._begin("teleport", lambda report: _stats(teleport_out(
                vm_id, config, r.host, r.port, r.password, r.max_downtime_ms, progress=report))),
            ops.TeleportIn: lambda r: self._begin("teleport-in", lambda report: _arrival(teleport_in(
                vm_id, config, r.address, r.port, r.password_hash, wait_s=r.wait_s, progress=report))),
        }

    def status(self) -> dict:
        with self._lock:
            task = self.task
        return {"pid": os.getpid(), **(task.view() if task else {"task": None})}

    def _begin(self, name: str, work) -> None:
        with self._lock:
            if self.task is not None and not self.task.done:
                raise ControlError(f"the VM's {self.task.name} is still under way")
            task = self.task = Task(name)
        task.thread = threading.Thread(target=task.run, args=(work,), name=name, daemon=True)
        task.thread.start()


def _stats(stats) -> dict:
    return {"downtime_ms": round(stats.downtime_ms, 1), "total_ms": round(stats.total_ms, 1),
            "bytes_sent": stats.bytes_sent}


def _arrival(result) -> dict:
    return {"peer": result.peer, "resumed": result.resumed}


def serve(spec: LaunchSpec) -> None:
    """Until SIGTERM (supervisor stops the program once the manager has the task's outcome)."""
    mover = StateMover(spec)
    server = ControlServer(endpoint(spec.vm_id, "control-teleport"), mover.handlers())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            if server.socket.poll(200):
                server.handle_one()
    finally:
        server.close()
