"""A VM's process group under supervisor (`vm-<uuid>`): its programs, their start in order, their
end, and what supervisor's view of them means for the VM (`verdict`).

The programs: `vcpu`, `devices`, `vrdp` (restarted when it dies: clients reconnect) and `teleport`,
started only while a savestate, a restore or a teleport moves the VM's state. Each is told by the
launch spec in the VM's runtime folder."""

from __future__ import annotations

import logging
import os
import sys
import time

from services.ipc import ops
from services.ipc.spec import LaunchSpec, process_argv
from services.manager import supervision
from services.manager.errors import IPRT_ERROR, ManagerError
from services.manager.vmcontrol import vm_call

log = logging.getLogger("headbox.manager")

START_TIMEOUT_S = 30.0
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROGRAMS = (("vcpu", False), ("devices", False), ("vrdp", True), ("teleport", False))   # (name, restart)


def group_name(uuid: str) -> str:
    return f"vm-{uuid}"


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


class ProcessGroups:
    """The manager's supervisor and the VM groups in it."""

    def __init__(self, home: str):
        self.home = home
        self._supervisor: supervision.Supervisor | None = None

    def attach(self) -> supervision.Supervisor | None:
        """The supervisor a previous manager left running, if any (its groups are running VMs)."""
        try:
            supervisor = supervision.connect(self.home, start=False)
        except supervision.SupervisorError as error:
            log.warning("%s", error)
            return None
        if supervisor.alive():
            self._supervisor = supervisor
            return supervisor
        return None

    def supervisor(self) -> supervision.Supervisor:
        if self._supervisor is None or not self._supervisor.alive():
            try:
                self._supervisor = supervision.connect(self.home)
            except supervision.SupervisorError as error:
                raise ManagerError(IPRT_ERROR, str(error)) from None
        return self._supervisor

    def shutdown(self) -> None:
        """Stop our own supervisord (never the one we run under)."""
        if self._supervisor is not None and self._supervisor.owned:
            self._supervisor.shutdown()
            log.info("supervisord stopped (no VM runs)")

    def snapshot(self) -> dict[str, dict[str, dict]] | None:
        """Supervisor's processes by group and program; None before any group was added."""
        if self._supervisor is None:
            return None
        groups: dict[str, dict[str, dict]] = {}
        for info in self._supervisor.processes():
            groups.setdefault(info["group"], {})[info["name"]] = info
        return groups

    # -- one VM's group ------------------------------------------------------------------------------
    def add(self, spec: LaunchSpec, logs: str) -> None:
        """Write the spec and define the group; nothing starts yet."""
        path = spec.save()
        group = group_name(spec.vm_id)
        os.makedirs(logs, mode=0o700, exist_ok=True)
        programs = [supervision.Program(name, process_argv(name, path, sys.executable), restart,
                                        os.path.join(logs, f"{name}.log"), startsecs=1 if restart else 0)
                    for name, restart in PROGRAMS]
        self.supervisor().add_group(group, supervision.group_config(group, programs, REPO_ROOT,
                                                                    self._environment()))

    def start(self, uuid: str, name: str, program: str, logs: str) -> int:
        """Start one program and wait until it answers `status` with the pid supervisor gave it."""
        group = group_name(uuid)
        log_file = os.path.join(logs, f"{program}.log")
        offset = os.path.getsize(log_file) if os.path.exists(log_file) else 0
        supervisor = self.supervisor()
        supervisor.start_program(group, program)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            info = supervisor.call("getProcessInfo", f"{group}:{program}")
            if info["statename"] in ("EXITED", "FATAL", "BACKOFF", "STOPPED"):
                raise ManagerError(IPRT_ERROR, _error_line(log_file, offset) or
                                   f"the {program} process of VM '{name}' failed to start ({_how(info)}); "
                                   f"see {log_file}")
            try:
                status = vm_call(uuid, program, ops.Status(), timeout_ms=100)
                if status.get("pid") == info["pid"]:
                    return info["pid"]
            except ManagerError:
                pass
        raise ManagerError(IPRT_ERROR, f"the {program} process of VM '{name}' did not start in "
                           f"{START_TIMEOUT_S:g} s; see {log_file}")

    def start_nowait(self, uuid: str, program: str) -> None:
        self.supervisor().start_program(group_name(uuid), program)

    def stop_program(self, uuid: str, program: str) -> None:
        try:
            self.supervisor().call("stopProcess", f"{group_name(uuid)}:{program}", True)
        except supervision.SupervisorError as error:
            log.warning("%s", error)

    def kill(self, uuid: str, name: str) -> None:
        """SIGKILL to every process of the VM's group: a stopped (SIGSTOP) or hung process ignores
        the SIGTERM a stop starts with, and waiting for supervisor's SIGKILL takes its stopwaitsecs."""
        try:
            self.supervisor().call("signalProcessGroup", group_name(uuid), "KILL")
        except (ManagerError, supervision.SupervisorError) as error:
            log.warning("VM '%s': killing its processes: %s", name, error)

    def remove(self, uuid: str, name: str, graceful: bool = False) -> None:
        """Stop the VM's processes and forget the group; `graceful` lets the device process flush
        its disks first."""
        if graceful:
            try:
                vm_call(uuid, "devices", ops.Stop(), timeout_ms=3000)
            except ManagerError:
                pass
        try:
            self.supervisor().remove_group(group_name(uuid))
        except (ManagerError, supervision.SupervisorError) as error:
            log.error("VM '%s': removing its process group failed: %s", name, error)

    def _environment(self) -> dict[str, str]:
        env = {"PYTHONPATH": REPO_ROOT, "VBOX_USER_HOME": self.home, "PYTHONUNBUFFERED": "1"}
        for key in ("XDG_RUNTIME_DIR", "HOME", "PATH", "LANG"):
            if os.environ.get(key):
                env[key] = os.environ[key]
        return env


def _error_line(log_file: str, offset: int) -> str | None:
    """Our services print one "<prog>: error: <message>" line when they refuse to start."""
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
