"""The target end of a teleport: a VM started with --incoming waits paused on a TCP port, checks the
source's password and configuration, takes its memory and state, then its media, and runs on.

A failure before the media are taken ends the wait with an error (the caller powers the waiting VM
off) and the source keeps its VM; once the media are taken this end owns the VM and resumes it
even if the connection is lost before the hand-over command."""

from __future__ import annotations

import hmac
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.ipc import ops
from services.teleport import records, wire
from services.teleport.areas import AREAS, TargetArea
from services.teleport.hardware import config_mismatch
from services.teleport.vm import TeleportError, VmControl

log = logging.getLogger("headbox.teleport")

DEFAULT_WAIT_S = 300.0           # VirtualBox stops listening after 5 minutes
STEP_TIMEOUT_S = 60.0

@dataclass
class TargetResult:
    peer: str
    resumed: bool
    received_bytes: int


class _Conn:
    def __init__(self, sock: socket.socket, peer: str):
        self.sock, self.peer = sock, peer
        self.reader = wire.Reader()
        self.received = 0

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            raise TeleportError(f"the source {self.peer} went silent") from None
        if not data:
            return False
        self.received += len(data)
        self.reader.feed(data)
        return True

    def line(self, timeout: float = STEP_TIMEOUT_S) -> bytes | None:
        """The next command line, or None when the source closed the connection."""
        deadline = time.monotonic() + timeout
        while (line := self.reader.line()) is None:
            if not self._fill(deadline):
                return None
        return line

    def block(self, timeout: float = STEP_TIMEOUT_S) -> bytes:
        deadline = time.monotonic() + timeout
        while (data := self.reader.block()) is None:
            if not self._fill(deadline):
                raise TeleportError(f"the source {self.peer} closed the connection during the stream")
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def refuse(self, data: bytes) -> None:
        """Send a NACK and close gently: reading what the source still sends until it stops, so
        that our close does not reset the connection and destroy the NACK before it is read."""
        try:
            self.sock.sendall(data)
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(0.2)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.sock.recv(1 << 20):
                pass
        except OSError:
            pass


def teleport_in(vm_id: str, config: dict, address: str, port: int, password_hash: str = "",
                wait_s: float = DEFAULT_WAIT_S, progress: Callable[[int], None] | None = None,
                on_listening: Callable[[int], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> TargetResult:
    """Wait for a source on address:port and take the VM into the paused, --incoming VM vm_id.
    Returns when the VM runs here (or is paused, if the source was); raises TeleportError otherwise."""
    report = progress or (lambda percent: None)
    try:
        listener = socket.create_server((address or "", port), reuse_port=False)
    except OSError as error:
        raise TeleportError(f"cannot listen for the teleport on {address or '*'}:{port}: "
                            f"{error.strerror or error}") from None
    deadline = time.monotonic() + wait_s
    log.info("Teleporter: Waiting for incoming VM on port %d...", listener.getsockname()[1])
    if on_listening:
        on_listening(listener.getsockname()[1])
    report(0)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TeleportError("Teleporter timed out waiting for incoming connection")
            if cancelled is not None and cancelled():
                raise TeleportError("Teleporting canceled")
            listener.settimeout(min(remaining, 1.0))
            try:
                sock, peer = listener.accept()
            except TimeoutError:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, f"{peer[0]}:{peer[1]}")
            try:
                if not _authenticate(conn, password_hash):
                    continue       # a wrong password ends that connection, not the wait
                listener.close()
                return _receive(vm_id, config, conn, report)
            finally:
                sock.close()
    finally:
        listener.close()


def _authenticate(conn: _Conn, password_hash: str) -> bool:
    try:
        conn.send(wire.WELCOME)
        line = conn.line(timeout=15)
    except (OSError, TeleportError, wire.WireError) as error:
        log.warning("teleport connection from %s dropped before its password: %s", conn.peer, error)
        return False
    if line is None:
        return False
    if not hmac.compare_digest(line, password_hash.encode() + b"\n"):
        log.warning("teleport from %s refused: invalid password", conn.peer)
        try:
            conn.send(wire.nack(wire.VERR_AUTHENTICATION_FAILURE, "Invalid password"))
        except OSError:
            pass
        return False
    conn.send(wire.ack())
    return True


def _receive(vm_id: str, config: dict, conn: _Conn, report) -> TargetResult:
    vm = VmControl(vm_id)
    areas = [TargetArea(vm_id, name) for name in AREAS]
    owns_vm = False
    try:
        status = vm.vcpu(ops.Status())
        config = {**config, "accel": status.get("accel"), "cpu_features": status.get("cpu_features") or {}}
        if conn.line() != b"load\n":
            raise TeleportError(f"the source {conn.peer} did not ask to load a VM")
        conn.send(wire.ack())
        log.info("Teleporting VM from %s", conn.peer)
        cpu, devices, resume_early = _load_stream(conn, config, areas, report)
        vm.vcpu(ops.Restore(state=cpu))
        conn.send(wire.ack())                       # load-complete
        command = conn.line()
        if command != b"lock-media\n":
            raise TeleportError(f"the source cancelled the teleport ({_describe(command)})")
        try:
            vm.devices(ops.OpenMedia())
        except TeleportError as error:
            conn.send(wire.nack(wire.VERR_FILE_LOCK_FAILED, str(error)))
            raise
        try:
            vm.devices(ops.Restore(state=devices))
        except TeleportError as error:
            # Let go of the media before refusing, or the source could not take them back.
            vm.devices(ops.ReleaseMedia())
            conn.send(wire.nack(wire.VERR_SSM_LOAD_CONFIG_MISMATCH, str(error)))
            raise
        owns_vm = True                              # the point of no return: the media are ours
        if resume_early:
            vm.vcpu(ops.Resume())                    # before the answer: it ends the downtime
        conn.send(wire.ack())
        report(95)
        try:
            command = conn.line(timeout=15)
        except (TeleportError, OSError):
            command = None
        resume = resume_early if resume_early is not None else command != b"hand-over-paused\n"
        if command not in (b"hand-over-resume\n", b"hand-over-paused\n"):
            log.warning("no hand-over command from %s (%s): the VM is ours, %s",
                        conn.peer, _describe(command), "resuming it" if resume else "left paused")
        if resume and resume_early is None:
            vm.vcpu(ops.Resume())
        try:
            conn.send(wire.ack())
        except OSError:
            pass
        report(100)
        log.info("teleport from %s complete; the VM %s", conn.peer, "runs" if resume else "is paused")
        return TargetResult(conn.peer, resume, conn.received)
    except (TeleportError, OSError, ValueError, TypeError, wire.WireError) as error:
        if owns_vm:
            raise
        message = str(error) if not isinstance(error, OSError) else f"connection to the source failed: {error}"
        log.error("teleport from %s failed: %s", conn.peer, message)
        raise TeleportError(message) from None
    finally:
        for area in areas:
            area.close()
        vm.close()


def _describe(command: bytes | None) -> str:
    return "connection closed" if command is None else command.decode("ascii", "replace").strip()[:40]


def _area(areas: list[TargetArea], index) -> TargetArea:
    if not isinstance(index, int) or not 0 <= index < len(areas):
        raise ValueError(f"stream record for unknown memory area {index!r}")
    return areas[index]


def _load_stream(conn: _Conn, config: dict, areas: list[TargetArea], report):
    try:
        first = records.unpack(conn.block())
    except wire.WireError as error:
        raise TeleportError(str(error)) from None
    if first[0] != records.CONFIG or len(first) != 2 or not isinstance(first[1], dict):
        raise TeleportError("the stream does not start with the VM's configuration")
    mismatch = config_mismatch(first[1], config)
    if mismatch:
        conn.refuse(wire.nack(wire.VERR_SSM_LOAD_CONFIG_MISMATCH, mismatch))
        raise TeleportError(mismatch)
    total = max(1, int(first[1].get("pages", 1)))
    cpu = devices = resume = None
    pages = 0
    while True:
        block = conn.block()
        if not block:
            break
        record = records.unpack(block)
        kind = record[0]
        if kind == records.DATA:
            _, area, first_page, data = record
            _area(areas, area).write(first_page, data)
            pages += len(data) // records.PAGE
        elif kind == records.ZERO:
            _, area, first_page, count = record
            _area(areas, area).zero(first_page, count)
            pages += count
        elif kind == records.ROUND:
            report(min(90, 90 * pages // total))
        elif kind == records.CPU:
            cpu = record[1]
        elif kind == records.DEVICES:
            devices = record[1]
        elif kind == records.RESUME:
            resume = bool(record[1])
        else:
            raise TeleportError(f"unknown stream record {kind!r}")
    if cpu is None or devices is None:
        raise TeleportError("the stream ended without the processor and device state")
    return cpu, devices, resume
