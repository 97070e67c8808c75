"""Running VMs: start and stop their process groups under supervisor, their states, controlvm.

The state of each VM is tracked by polling supervisor every half second: a vCPU process that exits 0
means the guest powered off; any other death of the vCPU or device process means the VM aborted."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
import os
import threading
import time

from services.ipc import ops
from services.ipc.naming import remove_regions, remove_runtime_dir
from services.ipc.spec import LaunchSpec, spec_path
from services.manager import netcontrol, savedstate
from services.manager.errors import (
    E_FAIL,
    E_INVALIDARG,
    INVALID_VM_STATE,
    IPRT_ERROR,
    ManagerError,
)
from services.manager.groups import ProcessGroups, group_name, verdict
from services.manager.jobs import Job, Jobs
from services.manager.moves import StateMoves
from services.manager.states import OFF, ON, WATCHED, VmRun
from services.manager.states import VmState as S
from services.manager.vmcontrol import keyboard_events, vm_call

log = logging.getLogger("headbox.manager")

POLL_S = 0.5
VRDP_TIMEOUT_S = 15.0
POWEROFF_WAIT_S = 10.0          # then a poweroff kills the processes (a stopped or hung vCPU process)


class Runtime:
    """The VMs this manager runs. `settings` answers vm_uuid, vm_name, launch_spec, vm_folder and
    teleporter; `settings_lock` serializes every use of it with the daemon's settings requests.
    Every change of a VM's state goes through VmRun.move under `lock` (services/manager/states.py)."""

    def __init__(self, home: str, settings, settings_lock: threading.RLock, jobs: Jobs):
        self.home = home
        self.settings = settings
        self.settings_lock = settings_lock
        self.jobs = jobs
        self.vms: dict[str, VmRun] = {}
        self._settling: set[str] = set()     # uuids whose end is being settled (one caller does it)
        self.lock = threading.RLock()
        self.groups = ProcessGroups(home)
        self.moves = StateMoves(home, self.groups, jobs, self.lock)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="vm-states", daemon=True)

    # -- lifecycle of the manager ----------------------------------------------------------------
    def start(self) -> None:
        """Find the VMs a previous manager left running, then watch them."""
        if self.groups.attach() is not None:
            self._recover()
        self._poller.start()

    def close(self, stop_supervisor: bool) -> None:
        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(5)
        if stop_supervisor and not self.busy():
            self.groups.shutdown()

    def busy(self) -> bool:
        with self.lock:
            return any(run.live for run in self.vms.values())

    def _recover(self) -> None:
        for group, processes in (self.groups.snapshot() or {}).items():
            if not group.startswith("vm-"):
                continue
            try:
                self._recover_group(group, processes)
            except Exception:     # one odd group must not keep the manager from serving
                log.exception("recovering %s failed", group)

    def _recover_group(self, group: str, processes: dict[str, dict]) -> None:
        uuid = group[len("vm-"):]
        try:
            with self.settings_lock:
                name = self.settings.vm_name(uuid)
                logs = self._logs(uuid)
        except ManagerError:
            log.warning("supervisor runs %s, a VM these settings do not know; stopping it", group)
            self.groups.remove(uuid, group)
            return
        run = self.vms[uuid] = VmRun(uuid=uuid, name=name, logs=logs)
        run.move(S.STARTING)
        if verdict(processes) is not None:
            self._finish(run, *verdict(processes))
            return
        try:
            status = vm_call(uuid, "vcpu", ops.Status(), timeout_ms=2000)
        except ManagerError:
            self._finish(run, S.ABORTED, "its vCPU process does not answer")
            return
        run.pid_vcpu = status["pid"]
        run.move(S.PAUSED if status["state"] == "paused" else S.RUNNING)
        run.vrde_port = self._vrdp_port(uuid, timeout_ms=1000)
        log.info("VM '%s' (%s) found %s", name, uuid, run.state.lower())

    # -- what the settings need --------------------------------------------------------------------
    def state_of(self, uuid: str) -> dict:
        with self.lock:
            run = self.vms.get(uuid)
            if (run is None or not run.live) and savedstate.exists(self.home, uuid):
                since = datetime.datetime.fromtimestamp(os.path.getmtime(savedstate.path_for(self.home, uuid)),
                                                        datetime.UTC).isoformat(timespec="seconds")
                return {"state": S.SAVED, "state_since": since, "vrde_port_bound": None}
            if run is None:
                return {"state": S.POWERED_OFF, "state_since": None, "vrde_port_bound": None}
            return {"state": run.state, "state_since": run.since,
                    "vrde_port_bound": run.vrde_port if run.state in ON else None}

    def running_uuids(self) -> list[str]:
        with self.lock:
            return [uuid for uuid, run in self.vms.items() if run.live]

    def _resolve(self, vm) -> tuple[str, str]:
        if not isinstance(vm, str) or not vm:
            raise ManagerError(E_INVALIDARG, "a VM name or UUID is needed")
        with self.settings_lock:
            uuid = self.settings.vm_uuid(vm)
            return uuid, self.settings.vm_name(uuid)

    def _logs(self, uuid: str) -> str:
        return os.path.join(self.settings.vm_folder(uuid), "Logs")

    def _live(self, vm, states=ON) -> VmRun:
        uuid, name = self._resolve(vm)
        with self.lock:
            run = self.vms.get(uuid)
        # A VBoxHeadless run is controlled the same way (its processes' control sockets), as VirtualBox
        # lets controlvm drive a VM that VBoxHeadless started.
        if run is None or run.state not in states:
            raise ManagerError(INVALID_VM_STATE, f"Machine '{name}' is not currently running")
        return run

    def _claim(self, uuid: str, name: str) -> VmRun:
        """The VM's record, moved to Starting; refused while the VM holds processes (the caller holds
        the lock)."""
        run = self.vms.get(uuid)
        if run is not None and run.live:
            raise ManagerError(INVALID_VM_STATE, f"The machine '{name}' is already locked for a session "
                               "(or being unlocked)")
        run = self.vms[uuid] = VmRun(uuid=uuid, name=name)
        run.move(S.STARTING)
        return run

    # -- startvm ---------------------------------------------------------------------------------
    def startvm(self, vm=None, type="headless") -> dict:
        if type not in ("headless", "vrdp", "gui", "sdl", "separate"):
            raise ManagerError(E_INVALIDARG, f"Invalid session type '{type}'")
        if type not in ("headless", "vrdp"):
            raise ManagerError(E_INVALIDARG, f"Session type '{type}' needs a display; this host is headless")
        uuid, name = self._resolve(vm)
        with self.lock:
            run = self._claim(uuid, name)
        return {"job": self.jobs.start("startvm", lambda job: self._start(job, run))}

    def _start(self, job: Job, run: VmRun) -> None:
        started = time.monotonic()
        try:
            self._start_group(job, run)
        except BaseException:
            with self.lock:
                if run.live:
                    run.move(S.POWERED_OFF)
            raise
        log.info("VM '%s' (%s) running after %.2f s", run.name, run.uuid, time.monotonic() - started)

    def _start_group(self, job: Job, run: VmRun) -> None:
        uuid = run.uuid
        with self.settings_lock:
            spec = self.settings.launch_spec(uuid)
            run.logs = self._logs(uuid)
            teleporter = self.settings.teleporter(uuid)
        # A saved VM, or a teleporter-enabled one (a teleport target), starts its processes waiting
        # for the state they are given.
        saved = savedstate.exists(self.home, uuid)
        spec.incoming = saved or bool(teleporter.get("enabled"))
        vrde = spec.vrde
        run.vrde_enabled = vrde.enabled
        t0 = time.monotonic()
        self.groups.add(spec, run.logs)
        marks = {"group added": time.monotonic() - t0}
        try:
            job.progress(10)
            run.pid_vcpu = self.groups.start(uuid, run.name, "vcpu", run.logs)
            marks["vCPU answers"] = time.monotonic() - t0
            job.progress(50)
            # The RDP server needs only the vCPU's display surface: it starts while the devices do.
            self.groups.start_nowait(uuid, "vrdp")
            self.groups.start(uuid, run.name, "devices", run.logs)
            marks["devices answer"] = time.monotonic() - t0
            job.progress(70)
            run.vrde_port = self._vrdp_port(uuid, timeout_ms=int(VRDP_TIMEOUT_S * 1000))
            marks["RDP server answers"] = time.monotonic() - t0
            if run.vrde_port is None:
                log.warning("VM '%s': its RDP server does not answer status", run.name)
            elif vrde.enabled and not run.vrde_port:
                raise ManagerError(IPRT_ERROR, "VirtualBox Remote Desktop Extension server can't bind "
                                   f"to the port(s): {vrde.ports}")
        except BaseException:
            log.warning("VM '%s': start failed; stopping its processes", run.name)
            self.groups.remove(uuid, run.name)
            raise
        try:
            if saved:
                self.moves.restore(job, run)
            elif spec.incoming:
                self.moves.teleport_in(job, run, teleporter)
        except BaseException:
            self.groups.remove(uuid, run.name)      # a no-op when poweroff removed them already
            raise
        with self.lock:
            if run.state == S.STARTING:
                run.move(S.RUNNING)     # from now on the poller watches it
            elif not run.live:
                raise ManagerError(INVALID_VM_STATE, f"Machine '{run.name}' was powered off while starting")
        log.info("VM '%s' start: %s", run.name, ", ".join(f"{what} at {at:.2f} s" for what, at in marks.items()))

    def _vrdp_port(self, uuid: str, timeout_ms: int) -> int | None:
        """The port the RDP server bound (0: none of the configured ones), None if it does not say."""
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            try:
                return int(vm_call(uuid, "vrdp", ops.Status(), timeout_ms=300).get("port") or 0)
            except ManagerError:
                time.sleep(0.1)
        return None

    def refresh_vrde(self, vm: str) -> None:
        """The VRDE settings of a VM changed: a running VM's RDP server applies them before this
        returns, and its launch spec says them for a restart of that server."""
        try:
            uuid, _ = self._resolve(vm)
        except ManagerError:
            return
        with self.lock:
            run = self.vms.get(uuid)
            if run is None or run.state not in ON or run.foreground_pid:
                return
        with self.settings_lock:
            vrde = self.settings.launch_spec(uuid).vrde
        spec = LaunchSpec.load(spec_path(uuid))
        spec.vrde = vrde
        spec.save()
        vm_call(uuid, "vrdp", ops.Configure(config=vrde.to_dict()), timeout_ms=15000)
        run.vrde_enabled = vrde.enabled
        log.info("VM '%s': new VRDE settings applied", run.name)

    # -- watching ------------------------------------------------------------------------------------
    def _finish(self, run: VmRun, state: S, why: str) -> None:
        """The VM ended (or must end): stop its processes and settle its state, once."""
        if self._claim_settling(run):
            self._settle(run, state, why)

    def _claim_settling(self, run: VmRun) -> bool:
        """Whether this caller settles the VM: the poller and a forced poweroff may both try."""
        with self.lock:
            if run.state in OFF or run.uuid in self._settling:
                return False
            self._settling.add(run.uuid)
            return True

    def _settle(self, run: VmRun, state: S, why: str) -> None:
        try:
            if state == S.POWERED_OFF and run.state == S.SAVING:
                state, why = S.SAVED, "its state was saved"
            if state == S.ABORTED:
                log.error("VM '%s' (%s) aborted: %s; stopping its other processes", run.name, run.uuid, why)
            else:
                log.info("VM '%s' (%s) %s: %s", run.name, run.uuid, state, why)
            self.groups.remove(run.uuid, run.name, graceful=state != S.ABORTED)
            if state == S.ABORTED:
                remove_regions(run.uuid)
            remove_runtime_dir(run.uuid)
            with self.lock:
                run.move(state)
                run.pid_vcpu = run.vrde_port = None
        finally:
            with self.lock:
                self._settling.discard(run.uuid)

    def _poll_loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except Exception:   # a hiccup of supervisor must not stop the watching
                log.exception("watching the VMs failed")

    def poll(self) -> None:
        with self.lock:
            watched = [run for run in self.vms.values() if run.state in WATCHED]
        for run in [run for run in watched if run.foreground_pid]:
            if not _pid_alive(run.foreground_pid):
                log.info("VM '%s': its VBoxHeadless (pid %d) is gone", run.name, run.foreground_pid)
                with self.lock:
                    run.move(S.POWERED_OFF)
                    run.foreground_pid = None
        supervised = [run for run in watched if not run.foreground_pid]
        groups = self.groups.snapshot() if supervised else None
        if groups is None:
            return
        for run in supervised:
            result = verdict(groups.get(group_name(run.uuid), {}))
            with self.lock:
                # startvm's failure path or a session may have settled it since the snapshot above.
                still_watched = run.state in WATCHED and self.vms.get(run.uuid) is run
            if result is not None and still_watched:
                self._finish(run, S(result[0]), result[1])

    # -- runtime ops -------------------------------------------------------------------------------
    def vrde_clients(self, uuid: str, bound_port) -> list[dict]:
        """The clients logged on to a running VM's RDP server (its `status`), for showvminfo; none
        when it has no server or does not answer at once."""
        if not bound_port:
            return []
        try:
            clients = vm_call(uuid, "vrdp", ops.Status(), timeout_ms=500).get("clients") or []
        except ManagerError:
            return []
        return [c for c in clients if isinstance(c, dict) and c.get("since")]

    def vmstate(self, vm=None) -> dict:
        uuid, _ = self._resolve(vm)
        state = self.state_of(uuid)
        with self.lock:
            run = self.vms.get(uuid)
            pid = (run.foreground_pid or run.pid_vcpu) if run and run.live else None
        return {"state": state["state"], "vrde_port_bound": state["vrde_port_bound"], "pid_vcpu": pid}

    def launchspec(self, vm=None) -> dict:
        uuid, _ = self._resolve(vm)
        with self.settings_lock:
            spec = self.settings.launch_spec(uuid)
        return dataclasses.asdict(spec)

    def session(self, vm=None, action=None, pid=None, vrde_port_bound=None) -> None:
        """A VBoxHeadless run reports itself: it runs the VM from `open` to `close`."""
        uuid, name = self._resolve(vm)
        if action not in ("open", "close"):
            raise ManagerError(E_INVALIDARG, f"session action must be open or close, not {action!r}")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ManagerError(E_INVALIDARG, "session needs the pid of the process running the VM")
        with self.lock:
            run = self.vms.get(uuid)
            if action == "open":
                run = self._claim(uuid, name)
                run.foreground_pid, run.vrde_port = pid, vrde_port_bound
                run.move(S.RUNNING)
            elif run is not None and run.foreground_pid == pid:
                run.move(S.POWERED_OFF)
                run.foreground_pid = run.vrde_port = None

    def controlvm(self, vm=None, action=None, args=None):
        args = dict(args) if isinstance(args, dict) else list(args or [])
        if not isinstance(action, str):
            raise ManagerError(E_INVALIDARG, "controlvm needs an action")
        handler = getattr(self, f"_control_{action}", None)
        if handler is None and netcontrol.ACTION.fullmatch(action):
            handler = functools.partial(self._control_network, action=action)
        if handler is None:
            raise ManagerError(E_INVALIDARG, f"Invalid parameter '{action}'")
        # A teleport target still waiting for its VM can be powered off (VirtualBox cancels the wait).
        states = ON | {S.TELEPORTING_IN, S.STOPPING} if action == "poweroff" else ON
        return handler(self._live(vm, states), args)

    def _control_pause(self, run: VmRun, args) -> None:
        vm_call(run.uuid, "vcpu", ops.Pause(), timeout_ms=15000)
        with self.lock:
            run.move(S.PAUSED)

    def _control_resume(self, run: VmRun, args) -> None:
        if run.state != S.PAUSED:
            raise ManagerError(INVALID_VM_STATE, f"Machine '{run.name}' is not paused")
        vm_call(run.uuid, "vcpu", ops.Resume())
        with self.lock:
            run.move(S.RUNNING)

    def _control_reset(self, run: VmRun, args) -> None:
        vm_call(run.uuid, "vcpu", ops.Reset())

    def _control_poweroff(self, run: VmRun, args) -> None:
        with self.lock:
            waiting = run.state == S.TELEPORTING_IN
            again = run.state == S.STOPPING      # a poweroff that timed out: this one forces it
            run.move(S.POWERED_OFF if waiting else S.STOPPING)
        if waiting:
            # Its processes hold no guest yet; stopping them ends the teleport program's wait.
            self.groups.remove(run.uuid, run.name)
            remove_regions(run.uuid)
            remove_runtime_dir(run.uuid)
            log.info("VM '%s': powered off while waiting for a teleport", run.name)
            return
        if not again:
            deadline = time.monotonic() + POWEROFF_WAIT_S
            try:
                vm_call(run.uuid, "vcpu", ops.PowerOff(), timeout_ms=3000)
            except ManagerError as error:
                log.warning("VM '%s': the vCPU process does not take the poweroff: %s", run.name, error)
            while time.monotonic() < deadline:
                if run.state != S.STOPPING:
                    return
                time.sleep(0.1)
        # Stopped (SIGSTOP), hung or too slow: the processes are killed, the VM is off all the same
        # (claimed first, so the poller does not call the killed VM Aborted).
        if not self._claim_settling(run):
            return
        self.groups.kill(run.uuid, run.name)
        self._settle(run, S.POWERED_OFF, f"it did not power off within {POWEROFF_WAIT_S:g} s: its "
                                         "processes were killed")
        remove_regions(run.uuid)

    def _control_acpipowerbutton(self, run: VmRun, args) -> None:
        if not vm_call(run.uuid, "vcpu", ops.PowerButton()).get("handled"):
            log.info("VM '%s': the guest does not listen to the ACPI power button", run.name)

    def _control_screenshotpng(self, run: VmRun, args) -> None:
        if len(args) != 1 or not isinstance(args[0], str):
            raise ManagerError(E_INVALIDARG, "screenshotpng needs the path of the PNG file")
        path = os.path.abspath(args[0])
        if not os.path.isdir(os.path.dirname(path)):
            raise ManagerError("VBOX_E_FILE_ERROR", f"Failed to create file '{path}': no such folder")
        vm_call(run.uuid, "vcpu", ops.Screenshot(path=path), timeout_ms=15000)

    def _control_keyboardputscancode(self, run: VmRun, args) -> None:
        vm_call(run.uuid, "vcpu", ops.Keys(scancodes=keyboard_events(args)))

    def _control_vrde(self, run: VmRun, args) -> None:
        if args not in (["on"], ["off"]):
            raise ManagerError(E_INVALIDARG, "vrde takes on or off")
        self._modify(run, {"vrde": args[0] == "on"})

    def _control_vrdeport(self, run: VmRun, args) -> None:
        if len(args) != 1:
            raise ManagerError(E_INVALIDARG, "vrdeport takes one port list")
        self._modify(run, {"vrde_ports": str(args[0])})

    def _modify(self, run: VmRun, changes: dict) -> None:
        with self.settings_lock:
            self.settings.modifyvm(vm=run.uuid, changes=changes)
        self.refresh_vrde(run.uuid)

    def _control_network(self, run: VmRun, args, action: str) -> None:
        """setlinkstate<N> and natpf<N>: stored as VirtualBox stores them, but only once the VM took
        them (services/manager/netcontrol.py), so a refused rule is not kept."""
        changes = netcontrol.changes_for(action, args)
        with self.settings_lock:
            self.settings.change_running_vm(run.uuid, changes,
                                            lambda old, new: netcontrol.push(run.uuid, old, new))

    def _control_savestate(self, run: VmRun, args) -> dict:
        return self.moves.savestate(run)

    def _control_teleport(self, run: VmRun, args) -> dict:
        return self.moves.teleport_out(run, args)

    def _control_setvideomodehint(self, run: VmRun, args):
        raise ManagerError(E_FAIL, "setvideomodehint is not supported yet")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
