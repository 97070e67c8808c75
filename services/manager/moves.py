"""Moving a VM's state out of and into its processes: savestate and the restoring startvm, teleporting
out (controlvm teleport) and in (startvm of a teleporter-enabled VM).

The VM's `teleport` program does the moving (services/teleport/service.py): the manager starts it,
hands it one task, follows its progress as the job's and stops it; no guest memory passes here."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from services.ipc import ops
from services.manager import savedstate
from services.manager.errors import (
    E_INVALIDARG,
    FILE_ERROR,
    INVALID_VM_STATE,
    IPRT_ERROR,
    ManagerError,
)
from services.manager.groups import ProcessGroups
from services.manager.jobs import Job, Jobs
from services.manager.states import VmRun
from services.manager.states import VmState as S
from services.manager.vmcontrol import vm_call

log = logging.getLogger("headbox.manager")

FOLLOW_S = 0.1
POWER_OFF_TIMEOUT_S = 30.0
DEFAULT_MAX_DOWNTIME_MS = 250      # VirtualBox's --maxdowntime default


class StateMoves:
    def __init__(self, home: str, groups: ProcessGroups, jobs: Jobs, lock: threading.RLock):
        self.home, self.groups, self.jobs, self.lock = home, groups, jobs, lock

    def _follow(self, run: VmRun, request, job: Job, scale: Callable[[int], int] = lambda p: p) -> dict | None:
        """Start the teleport program, give it `request`, report its progress until the task ends;
        its final status, or None when the program went away (the VM's processes were stopped)."""
        self.groups.start(run.uuid, run.name, "teleport", run.logs)
        try:
            vm_call(run.uuid, "teleport", request)
            while True:
                try:
                    status = vm_call(run.uuid, "teleport", ops.Status(), timeout_ms=5000)
                except ManagerError as error:
                    log.info("VM '%s': the teleport program went away (%s)", run.name, error)
                    return None
                job.report(scale(status["percent"]))
                if status["done"]:
                    return status
                time.sleep(FOLLOW_S)
        finally:
            self.groups.stop_program(run.uuid, "teleport")

    def _back(self, run: VmRun, during: S, before: S) -> None:
        with self.lock:
            if run.state == during:
                run.move(before)

    # -- savestate ---------------------------------------------------------------------------------
    def savestate(self, run: VmRun) -> dict:
        """A job: pause, write the state to <home>/savedstates/<uuid>.sav, power off; the VM is Saved
        and its next startvm continues from there."""
        if run.foreground_pid:
            raise ManagerError(INVALID_VM_STATE, f"Machine '{run.name}' runs in VBoxHeadless: savestate is "
                               "for VMs the manager started")
        with self.lock:
            before = run.state
            run.move(S.SAVING)
        path = savedstate.path_for(self.home, run.uuid)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)

        def work(job: Job) -> dict:
            status = self._follow(run, ops.SaveState(path=path), job, scale=lambda p: min(p, 90))
            if status is None or status["error"]:
                self._back(run, S.SAVING, before)
                if status is None:
                    raise ManagerError(IPRT_ERROR, f"Machine '{run.name}' stopped while its state was saved")
                raise ManagerError(FILE_ERROR if status["error_kind"] == "file" else IPRT_ERROR, status["error"])
            vm_call(run.uuid, "vcpu", ops.PowerOff())
            deadline = time.monotonic() + POWER_OFF_TIMEOUT_S
            while run.state == S.SAVING and time.monotonic() < deadline:
                time.sleep(0.1)      # the poller sees the vCPU end: Saved
            log.info("VM '%s': state saved to %s (%d MiB on disk)", run.name, path,
                     os.stat(path).st_blocks * 512 >> 20)
            return {"path": path, "bytes": status["result"]["bytes"]}
        return {"job": self.jobs.start("savestate", work)}

    # The restoring start and the teleport target raise ManagerError when the VM does not arrive;
    # the start then stops its processes.
    def restore(self, job: Job, run: VmRun) -> None:
        """Load the saved state into the waiting processes; the file goes once the VM runs from it."""
        path = savedstate.path_for(self.home, run.uuid)
        with self.lock:
            run.move(S.RESTORING)
        status = self._follow(run, ops.RestoreState(path=path), job, scale=lambda p: 70 + p * 29 // 100)
        if status is None or status["error"]:
            why = status["error"] if status else "its processes stopped"
            raise ManagerError(INVALID_VM_STATE, f"The saved state of '{run.name}' cannot be restored: {why} "
                               f"(remove {path} to start it afresh)")
        os.unlink(path)
        log.info("VM '%s' restored from its saved state", run.name)
        with self.lock:
            run.move(S.RUNNING)

    # -- teleport ----------------------------------------------------------------------------------
    def teleport_in(self, job: Job, run: VmRun, teleporter: dict) -> None:
        """Wait (VirtualBox: up to 5 minutes) for a source to send this VM; it then runs here."""
        with self.lock:
            run.move(S.TELEPORTING_IN)
        request = ops.TeleportIn(port=int(teleporter["port"]), address=teleporter.get("address") or "",
                                 password_hash=teleporter.get("password_hash") or "")
        status = self._follow(run, request, job, scale=lambda p: 70 + p * 29 // 100)
        if status is None:
            raise ManagerError(IPRT_ERROR, "Teleporting canceled")   # powered off while waiting
        if status["error"]:
            log.warning("VM '%s': no teleport arrived (%s)", run.name, status["error"])
            raise ManagerError(IPRT_ERROR, status["error"])
        log.info("VM '%s' teleported in from %s", run.name, status["result"]["peer"])
        with self.lock:
            run.move(S.RUNNING if status["result"]["resumed"] else S.PAUSED)

    def teleport_out(self, run: VmRun, args) -> dict:
        """A job: stream the running VM to a target waiting at host:port; this end powers off after."""
        if not isinstance(args, dict) or not args.get("host") or not isinstance(args.get("port"), int):
            raise ManagerError(E_INVALIDARG, "teleport needs a map with host and port")
        request = ops.TeleportOut(host=str(args["host"]), port=args["port"], password=str(args.get("password") or ""),
                                  max_downtime_ms=int(args.get("maxdowntime") or DEFAULT_MAX_DOWNTIME_MS))
        with self.lock:
            before = run.state
            run.move(S.TELEPORTING)

        def work(job: Job) -> dict:
            status = self._follow(run, request, job, scale=lambda p: min(p, 99))
            if status is None or status["error"]:
                self._back(run, S.TELEPORTING, before)
                raise ManagerError(IPRT_ERROR, status["error"] if status else
                                   f"Machine '{run.name}' stopped during the teleport")
            # The source's vCPU powers off after the hand-over; the poller sees it end.
            return status["result"]
        return {"job": self.jobs.start("teleport", work)}
