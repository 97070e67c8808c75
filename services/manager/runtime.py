"""Running VMs: start and stop their process groups under supervisor, their states, controlvm.

The state of each VM is tracked by polling supervisor every half second: a vCPU process that exits 0
means the guest powered off; any other death of the vCPU or device process means the VM aborted."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from services.ipc import ops
from services.ipc.naming import remove_regions
from services.ipc.spec import LaunchSpec, process_argv, spec_path
from services.manager import savedstate, supervision
from services.manager.errors import (
    E_FAIL,
    E_INVALIDARG,
    INVALID_VM_STATE,
    IPRT_ERROR,
    ManagerError,
)
from services.manager.jobs import Job, Jobs
from services.manager.moves import StateMoves
from services.manager.vmcontrol import keyboard_events, vm_call

log = logging.getLogger("headbox.manager")

POLL_S = 0.5
START_TIMEOUT_S = 30.0
VRDP_TIMEOUT_S = 15.0
LIVE_STATES = ("Starting", "Running", "Paused", "Stopping", "Teleporting", "TeleportingIn")
WATCHED_STATES = ("Running", "Paused", "Stopping", "Teleporting")   # the poller settles these
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def group_name(uuid: str) -> str:
    return f"vm-{uuid}"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass
class VmRun:
    uuid: str
    name: str
    state: str = "PoweredOff"
    since: str = dataclasses.field(default_factory=now_iso)
    pid_vcpu: int | None = None
    vrde_port: int | None = None
    foreground_pid: int | None = None     # a VBoxHeadless run in the foreground (session op)
    vrde_enabled: bool = False
    saving: bool = False                  # savestate: its power-off ends in Saved

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, now_iso()


def verdict(processes: dict[str, dict]) -> tuple[str, str] | None:
    """What supervisor's view of a running VM's group means: None (it runs), ("PoweredOff", why) or
    ("Aborted", why). Sans-I/O: `processes` maps program name to supervisor's process info."""
    vcpu = processes.get("vcpu")
    if vcpu is None:
        return "Aborted", "its vCPU process is gone from supervisor"
    if vcpu["statename"] == "EXITED" and vcpu["exitstatus"] == 0:
        return "PoweredOff", "the guest powered off"
    if vcpu["statename"] not in ("RUNNING", "STARTING"):
        return "Aborted", f"the vCPU process died ({_how(vcpu)})"
    devices = processes.get("devices")
    if devices is not None and devices["statename"] not in ("RUNNING", "STARTING"):
        return "Aborted", f"the device process died ({_how(devices)})"
    return None


def _how(info: dict) -> str:
    if info["statename"] == "EXITED":
        return "killed by a signal" if info["exitstatus"] == -1 else f"exit code {info['exitstatus']}"
    return info["statename"].lower() + (f": {info['spawnerr']}" if info.get("spawnerr") else "")


class Runtime(StateMoves):
    """The VMs this manager runs. `settings` answers vm_uuid, launch_spec, vrde_config, vm_folder;
    `settings_lock` serializes every use of it with the daemon's settings requests."""

    def __init__(self, home: str, settings, settings_lock: threading.RLock, jobs: Jobs):
        self.home = home
        self.settings = settings
        self.settings_lock = settings_lock
        self.jobs = jobs
        self.vms: dict[str, VmRun] = {}
        self.lock = threading.RLock()
        self._supervisor: supervision.Supervisor | None = None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="vm-states", daemon=True)

    # -- lifecycle of the manager ----------------------------------------------------------------
    def start(self) -> None:
        """Find the VMs a previous manager left running, then watch them."""
        try:
            supervisor = supervision.connect(self.home, start=False)
            if supervisor.alive():
                self._supervisor = supervisor
                self._recover()
        except supervision.SupervisorError as error:
            log.warning("%s", error)
        self._poller.start()

    def close(self, stop_supervisor: bool) -> None:
        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(5)
        if stop_supervisor and self._supervisor is not None and self._supervisor.owned and not self.busy():
            self._supervisor.shutdown()
            log.info("supervisord stopped (no VM runs)")

    def busy(self) -> bool:
        with self.lock:
            return any(run.state in LIVE_STATES for run in self.vms.values())

    def supervisor(self) -> supervision.Supervisor:
        if self._supervisor is None or not self._supervisor.alive():
            try:
                self._supervisor = supervision.connect(self.home)
            except supervision.SupervisorError as error:
                raise ManagerError(IPRT_ERROR, str(error)) from None
        return self._supervisor

    def _recover(self) -> None:
        groups: dict[str, dict[str, dict]] = {}
        for info in self._supervisor.processes():
            if info["group"].startswith("vm-"):
                groups.setdefault(info["group"], {})[info["name"]] = info
        for group, processes in groups.items():
            try:
                self._recover_group(group, processes)
            except Exception:     # one odd group must not keep the manager from serving
                log.exception("recovering %s failed", group)

    def _recover_group(self, group: str, processes: dict[str, dict]) -> None:
        uuid = group[len("vm-"):]
        try:
            with self.settings_lock:
                name = self._name(uuid)
        except ManagerError:
            log.warning("supervisor runs %s, a VM these settings do not know; stopping it", group)
            self._supervisor.remove_group(group)
            return
        run = VmRun(uuid=uuid, name=name)
        self.vms[uuid] = run
        if verdict(processes) is not None:
            self._finish(run, *verdict(processes))
            return
        try:
            status = vm_call(uuid, "vcpu", ops.Status(), timeout_ms=2000)
        except ManagerError:
            self._finish(run, "Aborted", "its vCPU process does not answer")
            return
        run.pid_vcpu = status["pid"]
        run.set_state("Paused" if status["state"] == "paused" else "Running")
        run.vrde_port = self._vrdp_port(uuid, timeout_ms=1000)
        log.info("VM '%s' (%s) found %s", name, uuid, run.state.lower())

    # -- what the settings need --------------------------------------------------------------------
    def state_of(self, uuid: str) -> dict:
        with self.lock:
            run = self.vms.get(uuid)
            if (run is None or run.state not in LIVE_STATES) and savedstate.exists(self.home, uuid):
                since = datetime.datetime.fromtimestamp(os.path.getmtime(savedstate.path_for(self.home, uuid)),
                                                        datetime.UTC).isoformat(timespec="seconds")
                return {"state": "Saved", "state_since": since, "vrde_port_bound": None}
            if run is None:
                return {"state": "PoweredOff", "state_since": None, "vrde_port_bound": None}
            live = run.state in ("Running", "Paused")
            return {"state": run.state, "state_since": run.since,
                    "vrde_port_bound": run.vrde_port if live else None}

    def running_uuids(self) -> list[str]:
        with self.lock:
            return [uuid for uuid, run in self.vms.items() if run.state in LIVE_STATES]

    def _name(self, vm: str) -> str:
        return self.settings.vm_name(vm)

    def _resolve(self, vm) -> tuple[str, str]:
        if not isinstance(vm, str) or not vm:
            raise ManagerError(E_INVALIDARG, "a VM name or UUID is needed")
        with self.settings_lock:
            uuid = self.settings.vm_uuid(vm)
            return uuid, self._name(uuid)

    def _live(self, vm, states=("Running", "Paused")) -> VmRun:
        uuid, name = self._resolve(vm)
        with self.lock:
            run = self.vms.get(uuid)
        # A VBoxHeadless run is controlled the same way (its processes' control sockets), as VirtualBox
        # lets controlvm drive a VM that VBoxHeadless started.
        if run is None or run.state not in states:
            raise ManagerError(INVALID_VM_STATE, f"Machine '{name}' is not currently running")
        return run

    # -- startvm ---------------------------------------------------------------------------------
    def startvm(self, vm=None, type="headless") -> dict:
        if type not in ("headless", "vrdp", "gui", "sdl", "separate"):
            raise ManagerError(E_INVALIDARG, f"Invalid session type '{type}'")
        if type not in ("headless", "vrdp"):
            raise ManagerError(E_INVALIDARG, f"Session type '{type}' needs a display; this host is headless")
        uuid, name = self._resolve(vm)
        with self.lock:
            run = self.vms.get(uuid)
            if run is not None and run.state in LIVE_STATES:
                raise ManagerError(INVALID_VM_STATE, f"The machine '{name}' is already locked for a session "
                                   "(or being unlocked)")
            run = self.vms[uuid] = VmRun(uuid=uuid, name=name, state="Starting")
        return {"job": self.jobs.start("startvm", lambda job: self._start(job, run))}

    def _start(self, job: Job, run: VmRun) -> None:
        started = time.monotonic()
        try:
            self._start_group(job, run)
        except BaseException:
            with self.lock:
                run.set_state("PoweredOff")
            raise
        log.info("VM '%s' (%s) running after %.2f s", run.name, run.uuid, time.monotonic() - started)

    def _start_group(self, job: Job, run: VmRun) -> None:
        uuid, group = run.uuid, group_name(run.uuid)
        with self.settings_lock:
            spec = self.settings.launch_spec(uuid)
            folder = self.settings.vm_folder(uuid)
            teleporter = self._teleporter(uuid)
        # A saved VM, or a teleporter-enabled one (a teleport target), starts its processes waiting
        # for the state they are given.
        saved = savedstate.exists(self.home, uuid)
        spec.incoming = saved or bool(teleporter.get("enabled"))
        vrde = spec.vrde
        run.vrde_enabled = vrde.enabled
        logs = os.path.join(folder, "Logs")
        os.makedirs(logs, mode=0o700, exist_ok=True)
        path = spec.save()
        programs = [supervision.Program(program, process_argv(program, path, sys.executable), restart,
                                        os.path.join(logs, f"{program}.log"), startsecs=1 if restart else 0)
                    for program, restart in (("vcpu", False), ("devices", False), ("vrdp", True))]
        t0 = time.monotonic()
        supervisor = self.supervisor()
        supervisor.add_group(group, supervision.group_config(group, programs, REPO_ROOT, self._environment()))
        marks = {"group added": time.monotonic() - t0}
        try:
            job.progress(10)
            run.pid_vcpu = self._start_program(supervisor, run, "vcpu", programs[0].log_file)
            marks["vCPU answers"] = time.monotonic() - t0
            job.progress(50)
            # The RDP server needs only the vCPU's display surface: it starts while the devices do.
            supervisor.start_program(group, "vrdp")
            self._start_program(supervisor, run, "devices", programs[1].log_file)
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
            self._stop_group(run)
            raise
        if saved:
            self._restore(job, run, spec)
        elif spec.incoming:
            self._teleport_in(job, run, spec, teleporter)
        with self.lock:
            if run.state == "PoweredOff":
                raise ManagerError(INVALID_VM_STATE, f"Machine '{run.name}' was powered off while starting")
            if run.state != "Paused":
                run.set_state("Running")     # from now on the poller watches it
        log.info("VM '%s' start: %s", run.name, ", ".join(f"{what} at {at:.2f} s" for what, at in marks.items()))

    def _start_program(self, supervisor, run: VmRun, program: str, log_file: str) -> int:
        """Start one program and wait until it answers `status` with the pid supervisor gave it."""
        group = group_name(run.uuid)
        offset = os.path.getsize(log_file) if os.path.exists(log_file) else 0
        supervisor.start_program(group, program)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            info = supervisor.call("getProcessInfo", f"{group}:{program}")
            if info["statename"] in ("EXITED", "FATAL", "BACKOFF", "STOPPED"):
                raise ManagerError(IPRT_ERROR, self._error_line(log_file, offset) or
                                   f"the {program} process of VM '{run.name}' failed to start ({_how(info)}); "
                                   f"see {log_file}")
            try:
                status = vm_call(run.uuid, program, ops.Status(), timeout_ms=100)
                if status.get("pid") == info["pid"]:
                    return info["pid"]
            except ManagerError:
                pass
        raise ManagerError(IPRT_ERROR, f"the {program} process of VM '{run.name}' did not start in "
                           f"{START_TIMEOUT_S:g} s; see {log_file}")

    @staticmethod
    def _error_line(log_file: str, offset: int) -> str | None:
        # Our services print one "<prog>: error: <message>" line when they refuse to start.
        try:
            with open(log_file, "rb") as file:
                file.seek(offset)
                text = file.read().decode(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if ": error: " in line:
                return line.split(": error: ", 1)[1].strip()
        return None

    def _vrdp_port(self, uuid: str, timeout_ms: int) -> int | None:
        """The port the RDP server bound (0: none of the configured ones), None if it does not say."""
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            try:
                return int(vm_call(uuid, "vrdp", ops.Status(), timeout_ms=300).get("port") or 0)
            except ManagerError:
                time.sleep(0.1)
        return None

    def _environment(self) -> dict[str, str]:
        env = {"PYTHONPATH": REPO_ROOT, "VBOX_USER_HOME": self.home, "PYTHONUNBUFFERED": "1"}
        for key in ("XDG_RUNTIME_DIR", "HOME", "PATH", "LANG"):
            if os.environ.get(key):
                env[key] = os.environ[key]
        return env

    def refresh_vrde(self, vm: str) -> None:
        """The VRDE settings of a VM changed: a running VM's RDP server applies them before this
        returns, and its launch spec says them for a restart of that server."""
        try:
            uuid, _ = self._resolve(vm)
        except ManagerError:
            return
        with self.lock:
            run = self.vms.get(uuid)
            if run is None or run.state not in ("Running", "Paused") or run.foreground_pid:
                return
        with self.settings_lock:
            vrde = self.settings.launch_spec(uuid).vrde
        spec = LaunchSpec.load(spec_path(uuid))
        spec.vrde = vrde
        spec.save()
        vm_call(uuid, "vrdp", ops.Configure(config=vrde.to_dict()), timeout_ms=15000)
        run.vrde_enabled = vrde.enabled
        log.info("VM '%s': new VRDE settings applied", run.name)

    # -- stopping and watching ---------------------------------------------------------------------
    def _stop_group(self, run: VmRun, graceful: bool = False) -> None:
        if graceful:
            # The device process flushes its disks on "stop".
            try:
                vm_call(run.uuid, "devices", ops.Stop(), timeout_ms=3000)
            except ManagerError:
                pass
        try:
            self.supervisor().remove_group(group_name(run.uuid))
        except (ManagerError, supervision.SupervisorError) as error:
            log.error("VM '%s': removing its process group failed: %s", run.name, error)

    def _finish(self, run: VmRun, state: str, why: str) -> None:
        if state == "PoweredOff" and run.saving:
            state, why = "Saved", "its state was saved"
        if state == "Aborted":
            log.error("VM '%s' (%s) aborted: %s; stopping its other processes", run.name, run.uuid, why)
        else:
            log.info("VM '%s' (%s) %s: %s", run.name, run.uuid, state, why)
        self._stop_group(run, graceful=state != "Aborted")
        if state == "Aborted":
            remove_regions(run.uuid)
        with self.lock:
            run.set_state(state)
            run.pid_vcpu = run.vrde_port = None

    def _poll_loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except Exception:   # a hiccup of supervisor must not stop the watching
                log.exception("watching the VMs failed")

    def poll(self) -> None:
        with self.lock:
            watched = [run for run in self.vms.values() if run.state in WATCHED_STATES]
        foreground = [run for run in watched if run.foreground_pid]
        for run in foreground:
            if not _pid_alive(run.foreground_pid):
                log.info("VM '%s': its VBoxHeadless (pid %d) is gone", run.name, run.foreground_pid)
                with self.lock:
                    run.set_state("PoweredOff")
                    run.foreground_pid = None
        supervised = [run for run in watched if not run.foreground_pid]
        if not supervised or self._supervisor is None:
            return
        groups: dict[str, dict[str, dict]] = {}
        for info in self._supervisor.processes():
            groups.setdefault(info["group"], {})[info["name"]] = info
        for run in supervised:
            result = verdict(groups.get(group_name(run.uuid), {}))
            with self.lock:
                # startvm's failure path or a session may have settled it since the snapshot above.
                still_watched = run.state in WATCHED_STATES and self.vms.get(run.uuid) is run
            if result is not None and still_watched:
                self._finish(run, *result)

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
            pid = (run.foreground_pid or run.pid_vcpu) if run and run.state in LIVE_STATES else None
        return {"state": state["state"], "vrde_port_bound": state["vrde_port_bound"], "pid_vcpu": pid}

    def launchspec(self, vm=None) -> dict:
        uuid, _ = self._resolve(vm)
        with self.settings_lock:
            spec = self.settings.launch_spec(uuid)
        return dataclasses.asdict(spec)

    def session(self, vm=None, action=None, pid=None, vrde_port_bound=None) -> None:
        uuid, name = self._resolve(vm)
        if action not in ("open", "close"):
            raise ManagerError(E_INVALIDARG, f"session action must be open or close, not {action!r}")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ManagerError(E_INVALIDARG, "session needs the pid of the process running the VM")
        with self.lock:
            run = self.vms.get(uuid)
            if action == "open":
                if run is not None and run.state in LIVE_STATES:
                    raise ManagerError(INVALID_VM_STATE, f"The machine '{name}' is already locked for a "
                                       "session (or being unlocked)")
                run = self.vms[uuid] = VmRun(uuid=uuid, name=name, state="Running", foreground_pid=pid,
                                             vrde_port=vrde_port_bound)
                return
            if run is not None and run.foreground_pid == pid:
                run.set_state("PoweredOff")
                run.foreground_pid = run.vrde_port = None
        return

    def controlvm(self, vm=None, action=None, args=None):
        args = dict(args) if isinstance(args, dict) else list(args or [])
        if not isinstance(action, str):
            raise ManagerError(E_INVALIDARG, "controlvm needs an action")
        handler = getattr(self, f"_control_{action}", None)
        if handler is None:
            raise ManagerError(E_INVALIDARG, f"Invalid parameter '{action}'")
        # A teleport target still waiting for its VM can be powered off (VirtualBox cancels the wait).
        states = ("Running", "Paused", "TeleportingIn") if action == "poweroff" else ("Running", "Paused")
        return handler(self._live(vm, states), args)

    def _control_pause(self, run: VmRun, args) -> None:
        vm_call(run.uuid, "vcpu", ops.Pause(), timeout_ms=15000)
        with self.lock:
            run.set_state("Paused")

    def _control_resume(self, run: VmRun, args) -> None:
        if run.state != "Paused":
            raise ManagerError(INVALID_VM_STATE, f"Machine '{run.name}' is not paused")
        vm_call(run.uuid, "vcpu", ops.Resume())
        with self.lock:
            run.set_state("Running")

    def _control_reset(self, run: VmRun, args) -> None:
        vm_call(run.uuid, "vcpu", ops.Reset())

    def _control_poweroff(self, run: VmRun, args) -> None:
        with self.lock:
            waiting = run.state == "TeleportingIn"
            run.set_state("PoweredOff" if waiting else "Stopping")
        if waiting:
            # Its processes hold no guest yet; the teleport listener sees the state and stops.
            self._stop_group(run)
            remove_regions(run.uuid)
            log.info("VM '%s': powered off while waiting for a teleport", run.name)
            return
        vm_call(run.uuid, "vcpu", ops.PowerOff())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if run.state != "Stopping":
                return
            time.sleep(0.1)
        raise ManagerError(IPRT_ERROR, f"Machine '{run.name}' did not power off within 30 s")

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
