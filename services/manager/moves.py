"""Moving a VM's state out of and into its processes: savestate to a file and the restoring startvm,
teleporting out (controlvm teleport) and in (startvm of a teleporter-enabled VM).

A mixin of Runtime: it uses the runtime's settings, jobs, VM records and process-group helpers."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from services.ipc import ops
from services.ipc.spec import LaunchSpec
from services.manager import savedstate
from services.manager.errors import (
    E_INVALIDARG,
    INVALID_VM_STATE,
    IPRT_ERROR,
    ManagerError,
)
from services.manager.jobs import Job
from services.manager.vmcontrol import vm_call

if TYPE_CHECKING:
    from services.manager.runtime import VmRun

log = logging.getLogger("headbox.manager")


class StateMoves:
    def _restore(self, job: Job, run: VmRun, spec: LaunchSpec) -> None:
        """Load the saved state into the waiting processes, in a teleport target's order; the file
        goes once the VM runs from it."""
        from services.teleport.target import config_mismatch, hardware_config
        path = savedstate.path_for(self.home, run.uuid)
        try:
            accel = vm_call(run.uuid, "vcpu", ops.Status()).get("accel")
            header = savedstate.load(path, run.uuid)
            job.report(85)
            mismatch = config_mismatch(header["config"], {**hardware_config(spec), "accel": accel})
            if mismatch:
                raise savedstate.SavedStateError(mismatch)
            vm_call(run.uuid, "vcpu", ops.Restore(state=header["cpu"]), timeout_ms=60000)
            vm_call(run.uuid, "devices", ops.OpenMedia(), timeout_ms=30000)
            vm_call(run.uuid, "devices", ops.Restore(state=header["devices"]), timeout_ms=60000)
            vm_call(run.uuid, "vcpu", ops.Resume())
        except (savedstate.SavedStateError, ManagerError) as error:
            self._stop_group(run)
            raise ManagerError(INVALID_VM_STATE, f"The saved state of '{run.name}' cannot be restored: {error} "
                               f"(remove {path} to start it afresh)") from None
        os.unlink(path)
        log.info("VM '%s' restored from its saved state", run.name)

    def _teleporter(self, uuid: str) -> dict:
        getter = getattr(self.settings, "teleporter", None)
        return getter(uuid) if getter is not None else {"enabled": False}

    def _teleport_in(self, job: Job, run: VmRun, spec: LaunchSpec, teleporter: dict) -> None:
        """Wait (VirtualBox: up to 5 minutes) for a source to send this VM; it then runs here."""
        from services.teleport.source import TeleportError
        from services.teleport.target import hardware_config, teleport_in
        with self.lock:
            run.set_state("TeleportingIn")
        try:
            result = teleport_in(run.uuid, hardware_config(spec), teleporter.get("address") or "",
                                 int(teleporter["port"]), teleporter.get("password_hash") or "",
                                 progress=lambda percent: job.report(70 + percent * 29 // 100),
                                 # Powered off while waiting: stop listening (VirtualBox cancels too).
                                 cancelled=lambda: run.state != "TeleportingIn" or self.vms.get(run.uuid) is not run)
        except BaseException as error:
            with self.lock:
                current = run.state == "TeleportingIn" and self.vms.get(run.uuid) is run
            if current:     # not powered off (and maybe started again) meanwhile
                log.warning("VM '%s': no teleport arrived (%s); stopping its processes", run.name, error)
                self._stop_group(run)
            if isinstance(error, TeleportError):
                raise ManagerError(IPRT_ERROR, str(error)) from None
            raise
        log.info("VM '%s' teleported in from %s", run.name, result.peer)
        if not result.resumed:
            with self.lock:
                run.set_state("Paused")

    def _control_savestate(self, run: VmRun, args) -> dict:
        """A job: pause, write the state to <home>/savedstates/<uuid>.sav, power off; the VM is Saved
        and its next startvm continues from there."""
        from services.teleport.target import hardware_config
        if run.foreground_pid:
            raise ManagerError(INVALID_VM_STATE, f"Machine '{run.name}' runs in VBoxHeadless: savestate is "
                               "for VMs the manager started")
        with self.settings_lock:
            spec = self.settings.launch_spec(run.uuid)
        with self.lock:
            before = run.state
            run.set_state("Stopping")
            run.saving = True
        path = savedstate.path_for(self.home, run.uuid)

        def work(job: Job) -> dict:
            paused_by_us = False
            try:
                status = vm_call(run.uuid, "vcpu", ops.Status())
                if status["state"] != "paused":
                    vm_call(run.uuid, "vcpu", ops.Pause(), timeout_ms=15000)
                    paused_by_us = True
                job.report(10)
                cpu = vm_call(run.uuid, "vcpu", ops.Snapshot(), timeout_ms=60000)["state"]
                devices = vm_call(run.uuid, "devices", ops.Snapshot(), timeout_ms=60000)["state"]
                job.report(30)
                config = {**hardware_config(spec), "accel": status.get("accel")}
                size = savedstate.save(path, run.uuid, config, cpu, devices)
            except BaseException as error:
                with self.lock:
                    run.saving = False
                    run.set_state(before)
                if paused_by_us:
                    vm_call(run.uuid, "vcpu", ops.Resume())
                if isinstance(error, OSError):
                    raise ManagerError("VBOX_E_FILE_ERROR", f"Failed to save the state to '{path}': "
                                       f"{error.strerror}") from None
                raise
            job.report(90)
            vm_call(run.uuid, "vcpu", ops.PowerOff())
            deadline = time.monotonic() + 30
            while run.state == "Stopping" and time.monotonic() < deadline:
                time.sleep(0.1)
            log.info("VM '%s': state saved to %s (%d MiB on disk)", run.name, path,
                     os.stat(path).st_blocks * 512 >> 20)
            return {"path": path, "bytes": size}
        return {"job": self.jobs.start("savestate", work)}

    def _control_teleport(self, run: VmRun, args) -> dict:
        """A job: stream the running VM to a target waiting at host:port; this end powers off after."""
        if not isinstance(args, dict) or not args.get("host") or not isinstance(args.get("port"), int):
            raise ManagerError(E_INVALIDARG, "teleport needs a map with host and port")
        from services.teleport.source import (
            DEFAULT_MAX_DOWNTIME_MS,
            TeleportError,
            teleport_out,
        )
        from services.teleport.target import hardware_config
        with self.settings_lock:
            spec = self.settings.launch_spec(run.uuid)
        with self.lock:
            if run.state not in ("Running", "Paused"):
                raise ManagerError(INVALID_VM_STATE, f"Machine '{run.name}' is {run.state}")
            before = run.state
            run.set_state("Teleporting")

        def work(job: Job) -> dict:
            try:
                stats = teleport_out(run.uuid, hardware_config(spec), str(args["host"]), args["port"],
                                     str(args.get("password") or ""),
                                     int(args.get("maxdowntime") or DEFAULT_MAX_DOWNTIME_MS), progress=job.report)
            except TeleportError as error:
                with self.lock:
                    if run.state == "Teleporting":
                        run.set_state(before)
                raise ManagerError(IPRT_ERROR, str(error)) from None
            # The source's vCPU powers off after the hand-over; the poller sees it end.
            return {"downtime_ms": round(stats.downtime_ms, 1), "total_ms": round(stats.total_ms, 1),
                    "bytes_sent": stats.bytes_sent}
        return {"job": self.jobs.start("teleport", work)}
