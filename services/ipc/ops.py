"""The requests a VM's processes serve on their control sockets (services/ipc/control.py), with the
fields their replies carry. Which process serves which: the handlers each one gives its server."""

from __future__ import annotations

from services.ipc.control import request

# -- every process -------------------------------------------------------------------------------


@request("status")
class Status:
    """-> vcpu: state, accel, accel_reason, cpus, memory_mib, pid, cpu_features; devices: state,
    devices, pid; vrdp: pid, port, clients [{id, user, domain, address, ...}]; teleport: pid and its
    task's name, percent, done, result, error (one line) and error_kind ("file" for a file that
    cannot be written, "state" for a saved state that does not fit, else "teleport")."""


@request("snapshot")
class Snapshot:
    """Paused only -> state: the process's part of the machine state (plain data)."""


@request("restore")
class Restore:
    """Paused only: load a state taken by Snapshot."""
    state: dict


@request("reset")
class Reset:
    """Platform reset (the vCPUs reset their processors, the devices theirs)."""


# -- the vCPU process ------------------------------------------------------------------------------


@request("pause")
class Pause:
    """-> state, once the vCPUs are stopped and their state is consistent."""


@request("resume")
class Resume:
    pass


@request("poweroff")
class PowerOff:
    pass


@request("dirty")
class DirtyPages:
    """Guest memory written since the last call. Without `areas`: -> bitmap (bytes, one bit per
    RAM page, from the accelerator). With `areas` ("ram", "vram"): -> pages {area: little-endian
    uint32 page indices, or None when tracking just started}; `pause` first pauses and then also
    returns state (a teleport's stop-and-copy in one round trip); `stop` ends the tracking."""
    areas: list | None = None
    pause: bool = False
    stop: bool = False


@request("screenshot")
class Screenshot:
    """The screen as a PNG file at `path`."""
    path: str


@request("screen-text")
class ScreenText:
    """-> rows: the text-mode console as strings, or None in a graphics mode."""


@request("power-button")
class PowerButton:
    """The ACPI power button -> handled: whether the guest listens."""


@request("keys")
class Keys:
    """Set-1 scancodes typed on the PS/2 keyboard: [[code, extended, pressed], ...]."""
    scancodes: list


@request("throttle")
class Throttle:
    """Keep the vCPUs out of the guest for this share of the time (0 to 0.99): teleport's
    auto-converge."""
    share: float = 0.0


@request("link-state")
class LinkState:
    """`controlvm setlinkstate<N>`: plug (True) or pull the cable of adapter `slot` (0-7)."""
    slot: int
    up: bool


# -- the device process ------------------------------------------------------------------------------


@request("serial-input")
class SerialInput:
    """Bytes typed on a serial port (as if from its cable)."""
    data: bytes
    device: str = "serial"


@request("release-media")
class ReleaseMedia:
    """Teleport: flush and unlock the VM's images for the target; the VM is paused meanwhile."""


@request("open-media")
class OpenMedia:
    """Teleport target: lock and open the VM's images now that the source let them go."""


@request("port-forward")
class PortForward:
    """`controlvm natpf<N>`: add `rule` (services/ipc/network.py PortForward text) to the NAT of
    adapter `slot`, or with `delete` remove the rule named `rule`."""
    slot: int
    rule: str
    delete: bool = False


@request("stop")
class Stop:
    """End the process."""


# -- the RDP server ------------------------------------------------------------------------------


@request("disconnect")
class Disconnect:
    """Disconnect every client -> disconnected: how many."""


@request("configure")
class Configure:
    """New VRDE settings for a running VM (services/ipc/vrde.py VrdeConfig as plain data),
    applied before the reply."""
    config: dict


# -- the teleport program: a VM's state leaving or arriving ---------------------------------------
# Each starts one task and returns at once; `status` follows it.


@request("save-state")
class SaveState:
    """Pause the VM and write its state to the file `path` (it stays paused for its power-off)."""
    path: str


@request("restore-state")
class RestoreState:
    """Load the saved state file `path` into the waiting VM and resume it."""
    path: str


@request("teleport-out")
class TeleportOut:
    """Send the running VM to the target waiting at host:port; the VM powers off once the target
    runs it. -> result: downtime_ms, total_ms, bytes_sent."""
    host: str
    port: int
    password: str = ""
    max_downtime_ms: int = 250


@request("teleport-in")
class TeleportIn:
    """Wait on address:port for a source to send this (waiting) VM. -> result: peer, resumed."""
    port: int
    address: str = ""
    password_hash: str = ""
    wait_s: float = 300.0
