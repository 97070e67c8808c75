"""A VM's machine state, VirtualBox's names and moves (`MachineState` in its API): which state may
follow which is written once, here, and every change of a running VM's record goes through it."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from dataclasses import dataclass


class VmState(enum.StrEnum):
    POWERED_OFF = "PoweredOff"
    SAVED = "Saved"
    ABORTED = "Aborted"
    STARTING = "Starting"          # the processes start
    RESTORING = "Restoring"        # ... and load a saved state
    TELEPORTING_IN = "TeleportingIn"   # ... and wait for a teleport's source
    RUNNING = "Running"
    PAUSED = "Paused"
    STOPPING = "Stopping"          # poweroff asked, the vCPU process not yet gone
    SAVING = "Saving"              # savestate: paused, the state goes to a file, then Saved
    TELEPORTING = "Teleporting"    # the VM streams to a target; it powers off once the target runs it


S = VmState
OFF = (S.POWERED_OFF, S.SAVED, S.ABORTED)
FAILURES = (S.POWERED_OFF, S.ABORTED)       # a start that fails powers off; a dead process aborts
TRANSITIONS: dict[VmState, frozenset[VmState]] = {
    S.POWERED_OFF: frozenset({S.STARTING}),
    S.ABORTED: frozenset({S.STARTING}),
    S.SAVED: frozenset({S.STARTING, S.POWERED_OFF}),          # start restores it; discardstate
    S.STARTING: frozenset({S.RESTORING, S.TELEPORTING_IN, S.RUNNING, S.PAUSED, *FAILURES}),
    S.RESTORING: frozenset({S.RUNNING, *FAILURES}),   # a failed restore powers off; its file keeps it Saved
    S.TELEPORTING_IN: frozenset({S.RUNNING, S.PAUSED, *FAILURES}),
    S.RUNNING: frozenset({S.PAUSED, S.STOPPING, S.SAVING, S.TELEPORTING, *FAILURES}),
    S.PAUSED: frozenset({S.RUNNING, S.STOPPING, S.SAVING, S.TELEPORTING, *FAILURES}),
    S.STOPPING: frozenset(FAILURES),
    S.SAVING: frozenset({S.SAVED, S.RUNNING, S.PAUSED, *FAILURES}),      # back when the save fails
    S.TELEPORTING: frozenset({S.RUNNING, S.PAUSED, *FAILURES}),          # back when the target refuses
}
LIVE = frozenset(set(VmState) - set(OFF))                  # the VM holds processes
ON = frozenset({S.RUNNING, S.PAUSED})                       # controlvm's actions apply
WATCHED = frozenset({S.RUNNING, S.PAUSED, S.STOPPING, S.SAVING, S.TELEPORTING})   # the poller settles these


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in the manager, never a user's mistake."""


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass
class VmRun:
    """What the manager knows of one VM it runs (or ran since it started)."""
    uuid: str
    name: str
    state: VmState = VmState.POWERED_OFF
    since: str = dataclasses.field(default_factory=now_iso)
    pid_vcpu: int | None = None
    vrde_port: int | None = None
    foreground_pid: int | None = None     # a VBoxHeadless run in the foreground (session op)
    vrde_enabled: bool = False
    logs: str = ""                         # the folder of its processes' logs

    def move(self, state: VmState) -> None:
        """Change state as the table allows (the caller holds the runtime's lock)."""
        if state == self.state:
            return
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"VM '{self.name}': {self.state} -> {state} is not a machine-state move")
        self.state, self.since = state, now_iso()

    @property
    def live(self) -> bool:
        return self.state in LIVE
