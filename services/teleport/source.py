"""The source end of a teleport: pre-copies a running VM's memory to a waiting target, pauses it for
the last pages and the processor and device state, hands its media and the VM over, powers off.

Until the target has taken the media (the point of no return) any failure leaves the source VM
running as before; after it the target owns the VM and the source powers off."""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.hw.page_sets import merge_pages
from services.ipc import ops
from services.teleport import records, wire
from services.teleport.areas import AREAS, Area, ChangeFinder
from services.teleport.records import PAGE
from services.teleport.vm import TeleportError, VmControl

log = logging.getLogger("headbox.teleport")

DEFAULT_MAX_DOWNTIME_MS = 250
MAX_ROUNDS = 30
THROTTLE_FIRST, THROTTLE_STEP, THROTTLE_MAX = 0.2, 0.1, 0.99    # QEMU's auto-converge steps
REPLY_TIMEOUT_S = 60.0
FIXED_COST_S = 0.02          # state, media hand-over and resume, beyond the pages themselves


@dataclass
class TeleportStats:
    rounds: int = 0
    bytes_sent: int = 0
    pages_sent: int = 0
    throttle: float = 0.0
    downtime_start: float = 0.0
    downtime_ms: float = 0.0
    total_ms: float = 0.0
    round_pages: list = field(default_factory=list)
    phases: dict = field(default_factory=dict)      # downtime by step, ms (for profiling)

    def mark(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.phases[phase] = round((now - since) * 1000, 1)
        return now


class _Link:
    """The TCP connection to the target: lines, blocks, and a watch for a NACK mid-stream."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = wire.Reader()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise TeleportError(f"connection to the target failed: {error.strerror or error}") from None

    def _fill(self, timeout: float, what: str) -> None:
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            raise TeleportError(f"the target did not answer ({what}) within {timeout:.0f} s")
        data = self.sock.recv(65536)
        if not data:
            raise TeleportError(f"the target closed the connection ({what})")
        self.reader.feed(data)

    def line(self, what: str, timeout: float = REPLY_TIMEOUT_S) -> bytes:
        deadline = time.monotonic() + timeout
        while (line := self.reader.line()) is None:
            self._fill(max(0.0, deadline - time.monotonic()), what)
        return line

    def exact(self, n: int, what: str) -> bytes:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while (data := self.reader.exact(n)) is None:
            self._fill(max(0.0, deadline - time.monotonic()), what)
        return data

    def reply(self, what: str, timeout: float = REPLY_TIMEOUT_S) -> None:
        try:
            wire.parse_reply(self.line(what, timeout), what)
        except wire.WireError as error:
            raise TeleportError(str(error)) from None

    def check_target(self) -> None:
        """The target speaks during the stream only to refuse it (a NACK): raise its message."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable:
            self.reply("load")
            raise TeleportError("the target acknowledged the stream before its end")


def teleport_out(vm_id: str, config: dict, host: str, port: int, password: str = "",
                 max_downtime_ms: int = DEFAULT_MAX_DOWNTIME_MS,
                 progress: Callable[[int], None] | None = None, connect_timeout: float = 10.0) -> TeleportStats:
    """Move the running VM vm_id to the target waiting at host:port. Returns the figures; raises
    TeleportError with the reason when the VM stayed here (it then runs as before)."""
    if wire.is_hashed(password):
        raise TeleportError("The specified password resembles a hashed password, expected plain text")
    report = progress or (lambda percent: None)
    started = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as error:
        raise TeleportError(f"Failed to connect to port {port} on '{host}': {error.strerror or error}") from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    link, vm = _Link(sock), VmControl(vm_id)
    areas: list[Area] = []
    run = _SourceRun(vm, link, report)
    try:
        welcome = link.exact(len(wire.WELCOME), "welcome")
        if welcome != wire.WELCOME:
            raise TeleportError(f"Unexpected welcome {welcome!r}: the peer is not a Headbox teleport target")
        link.send(wire.hash_password(password).encode() + b"\n")
        link.reply("password")
        link.send(b"load\n")
        link.reply("load")
        areas = [Area(vm_id, name) for name in AREAS]
        stats = run.stream(config, areas, max_downtime_ms)
        run.hand_over()
        stats.total_ms = (time.monotonic() - started) * 1000
        log.info("VM %s teleported to %s:%d: %d rounds, %.1f MiB sent, downtime %.0f ms (%s), total %.0f ms",
                 vm_id, host, port, stats.rounds, stats.bytes_sent / 2**20, stats.downtime_ms,
                 ", ".join(f"{k} {v:g}" for k, v in stats.phases.items()), stats.total_ms)
        return stats
    except (TeleportError, OSError) as error:
        if not run.past_point_of_no_return:
            run.undo()
        message = str(error) if isinstance(error, TeleportError) else f"connection to the target failed: {error}"
        if run.past_point_of_no_return:
            message += "; the target took the VM's media and owns the VM, so this one was powered off"
        raise TeleportError(message) from None
    finally:
        for area in areas:
            area.close()
        vm.close()
        sock.close()


class _SourceRun:
    def __init__(self, vm: VmControl, link: _Link, report):
        self.vm, self.link, self.report = vm, link, report
        self.stats = TeleportStats()
        self.paused_by_us = False
        self.was_paused = False
        self.media_released = False
        self.streaming = False
        self.past_point_of_no_return = False
        self.finder = None

    # -- pre-copy and the final pass -----------------------------------------------------------
    def _send_pages(self, area_index: int, area: Area, dirty) -> int:
        sent = 0
        if dirty is None:
            # Every page: the never-written ones as zero runs without reading them.
            for first, count in area.holes():
                record = records.pack(records.ZERO, area_index, first, count)
                self.link.send(wire.frame(record))
                sent += len(record)
            dirty = area.populated()
        for record, data_bytes in records.page_records(area_index, area.send_view, dirty):
            self.link.check_target()
            self.link.send(wire.frame(record))
            sent += len(record)
            if data_bytes:
                self.stats.pages_sent += data_bytes // PAGE
        return sent

    def stream(self, config: dict, areas: list[Area], max_downtime_ms: int) -> TeleportStats:
        stats, link = self.stats, self.link
        status = self.vm.vcpu(ops.Status())
        self.was_paused = status.get("state") == "paused"
        config = {**config, "accel": status.get("accel"), "cpu_features": status.get("cpu_features") or {}}
        total_pages = sum(a.pages for a in areas)
        finder = self.finder = ChangeFinder(self.vm, areas)
        self.streaming = True
        link.send(wire.frame(records.pack(records.CONFIG, {**config, "pages": total_pages})))
        bandwidth = None          # bytes per second, measured per round
        budget = max_downtime_ms / 1000.0
        previous_sent = previous_dirty = None
        while True:
            round_start = time.monotonic()
            dirty = finder.look()
            scan_s = time.monotonic() - round_start
            dirty_pages = sum(area.pages if d is None else len(d) for area, d in zip(areas, dirty))
            stats.round_pages.append(dirty_pages)
            dirty_bytes = dirty_pages * PAGE
            if stats.rounds > 0 and bandwidth:
                expected = scan_s + dirty_bytes / bandwidth + FIXED_COST_S
                # Within the budget, one more round is still worth it while it keeps shrinking
                # what is left (a guest that dirties slower than the link): less downtime.
                shrinking = previous_dirty and dirty_bytes < previous_dirty / 2 and expected > budget / 10
                if (expected <= budget and not shrinking) or stats.rounds >= MAX_ROUNDS:
                    break
                if previous_sent and dirty_bytes > previous_sent / 2:
                    self._throttle_more()
            sent = 0
            for index, (area, pages) in enumerate(zip(areas, dirty)):
                sent += self._send_pages(index, area, pages)
                link.check_target()
            elapsed = time.monotonic() - round_start
            if sent >= 1 << 20 or bandwidth is None:
                bandwidth = max(sent, PAGE) / max(elapsed - scan_s, 1e-3)
            previous_sent, previous_dirty = sent, dirty_bytes
            stats.rounds += 1
            stats.bytes_sent += sent
            link.send(wire.frame(records.pack(records.ROUND, stats.rounds, dirty_pages)))
            self.report(min(90, 10 + 80 * stats.rounds // (stats.rounds + 2)))
        # Stop and copy: from here to the target's resume is the downtime.
        pause_at = stats.downtime_start = time.monotonic()
        self.paused_by_us = not self.was_paused
        last_look = finder.look(pause=True)
        step = stats.mark("pause", pause_at)
        for index, (area, found, last) in enumerate(zip(areas, dirty, last_look)):
            # The pages of the round that decided to stop were taken from the log but not sent yet.
            pages = None if found is None or last is None else merge_pages(found, last)
            stats.bytes_sent += self._send_pages(index, area, pages)
        step = stats.mark("last pages", step)
        cpu = finder.cpu_state or self.vm.vcpu(ops.Snapshot())["state"]
        devices = self.vm.devices(ops.Snapshot())["state"]
        step = stats.mark("state", step)
        for record in (records.pack(records.CPU, cpu), records.pack(records.DEVICES, devices),
                       records.pack(records.RESUME, not self.was_paused)):
            link.send(wire.frame(record))
            stats.bytes_sent += len(record)
        link.send(wire.END_OF_STREAM)
        self.streaming = False
        # Pipelined: the media go while the target restores the processor; if the load fails
        # they are taken back (the target never locked them).
        self.vm.devices(ops.ReleaseMedia())
        self.media_released = True
        link.send(b"lock-media\n")
        link.reply("load-complete")
        stats.mark("load", step)
        self.report(95)
        return stats

    def _throttle_more(self) -> None:
        stats = self.stats
        share = THROTTLE_FIRST if not stats.throttle else min(THROTTLE_MAX, stats.throttle + THROTTLE_STEP)
        if share != stats.throttle:
            stats.throttle = share
            self.vm.vcpu(ops.Throttle(share=share))
            log.info("the guest dirties memory faster than it can be sent: vCPU throttled to %d%%",
                     round(100 * (1 - share)))

    # -- the switch --------------------------------------------------------------------------
    def hand_over(self) -> None:
        link, stats = self.link, self.stats
        step = time.monotonic()
        link.reply("lock-media")
        # The target holds the media and runs the VM (it resumes before this answer): it owns the
        # VM now, whatever happens to this connection. The downtime ends here.
        self.past_point_of_no_return = True
        stats.mark("media and resume", step)
        stats.downtime_ms = (time.monotonic() - stats.downtime_start) * 1000
        try:
            link.send(b"hand-over-paused\n" if self.was_paused else b"hand-over-resume\n")
            link.reply("hand-over", timeout=15)
        except (TeleportError, OSError) as error:
            log.warning("the target did not confirm the hand-over (%s); it owns the VM", error)
        try:
            self.vm.vcpu(ops.PowerOff())
        except TeleportError as error:
            log.warning("powering off the source after the teleport: %s", error)
        self.report(100)

    def undo(self) -> None:
        """Leave the source VM as it was: media taken back, throttle off, running again."""
        try:
            self.link.send(wire.CANCEL if self.streaming else b"cancel\n")
        except TeleportError:
            pass                             # the connection is gone: nothing to tell the target
        if self.media_released:
            try:
                self.vm.devices(ops.OpenMedia())
            except TeleportError as error:
                # The target took the media although its answer never arrived: it owns the VM.
                log.error("the target holds the VM's media (%s): powering off the source", error)
                self.past_point_of_no_return = True
                self.vm.vcpu(ops.PowerOff())
                return
        steps = []
        if self.finder is not None:
            steps.append(self.finder.stop)
        if self.stats.throttle:
            steps.append(lambda: self.vm.vcpu(ops.Throttle(share=0)))
        if self.paused_by_us:
            steps.append(lambda: self.vm.vcpu(ops.Resume()))
        for step in steps:
            try:
                step()
            except TeleportError as error:
                log.error("restoring the source VM after a failed teleport: %s", error)
