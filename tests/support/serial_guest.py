"""The test guest on the serial console, for tests that run shell commands in a whole VM (vCPU and
device processes): boot to its ready marker, run a command and read its output, power off; every
wait is bounded by the module's time budget."""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest

from services.headless import VmProcesses
from services.ipc import ops
from services.ipc.control import ControlClient, ControlError
from services.ipc.naming import endpoint, shm_name
from services.ipc.spec import Drive, LaunchSpec

BOOT_TIMEOUT = 150.0        # to GUEST-READY


COMMAND_TIMEOUT = 60.0      # one shell command on the serial console


POWEROFF_TIMEOUT = 30.0


def qemu_img() -> str:
    path = shutil.which("qemu-img")
    if not path:
        pytest.fail("qemu-img is missing (apt-get install qemu-utils): the VDI acceptance test needs it "
                    "as the oracle", pytrace=False)
    return path


class Budget:
    """The module's time budget: every wait is clamped to what is left of it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def clamp(self, timeout: float) -> float:
        return max(0.0, min(timeout, self.deadline - time.monotonic()))

    def spent(self) -> bool:
        return time.monotonic() >= self.deadline


class VmError(AssertionError):
    pass


class SerialLog:
    """COM1's output as the device process appends it to a file, read incrementally."""

    def __init__(self, path: Path):
        self.path = path
        self.data = bytearray()
        self._file = None

    def poll(self) -> bytearray:
        if self._file is None:
            if not self.path.exists():
                return self.data
            self._file = open(self.path, "rb")
        while chunk := self._file.read(65536):
            self.data += chunk
        return self.data

    def tail(self, size: int = 2500) -> str:
        return bytes(self.poll()[-size:]).decode("latin-1").replace("\x1b[6n", "")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class GuestVm:
    """One run of the VM: the two processes, the serial console and the vCPU control socket."""

    def __init__(self, name: str, drives: list[str], workdir: Path, budget: Budget, nics=(), vrde=None):
        self.name, self.workdir, self.budget = name, workdir, budget
        self.vm_id = f"vdi{name}-{uuid.uuid4().hex[:6]}"
        self.serial = SerialLog(workdir / f"serial-{name}.log")
        spec = LaunchSpec(vm_id=self.vm_id, memory_mib=256, accel="tcg", drives=[Drive.parse(d) for d in drives],
                          serial_log=str(self.serial.path), nics=list(nics), vrde=vrde)
        self.processes = VmProcesses(spec, env=dict(os.environ))
        self.commands = 0
        self.started = 0.0
        self.timings: dict[str, float] = {}

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.started = time.monotonic()
        self.processes.start()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def boot(self) -> None:
        self.wait_for(b"GUEST-READY", BOOT_TIMEOUT, what="the guest's ready marker")
        self.timings["ready"] = self.elapsed()
        self.wait_for(b"guest# ", 30, after=self.serial.data.index(b"GUEST-READY"), what="the shell prompt")

    def poweroff(self) -> tuple[int, int]:
        """`poweroff -f`, then the vCPU process must end on its own (ACPI S5) and the VM runner
        stops the device process, which flushes and closes the images. Returns both exit codes."""
        self.type("poweroff -f")
        deadline = time.monotonic() + self.budget.clamp(POWEROFF_TIMEOUT)
        while self.processes.vcpu.poll() is None:
            if self.processes.devices.poll() is not None:
                raise VmError(f"the device process died (exit code {self.processes.devices.returncode}) "
                              "while the guest powered off")
            if time.monotonic() > deadline:
                raise VmError(f"the vCPU process did not end within {POWEROFF_TIMEOUT} s of `poweroff -f`")
            time.sleep(0.1)
        code = self.processes.wait()
        self.timings["poweroff"] = self.elapsed()
        return code, self.processes.devices.returncode

    def close(self) -> None:
        self.processes.kill()
        self.serial.close()
        # Shared-memory regions (RAM, display surface) are left behind only by a killed process.
        for region in Path("/dev/shm").glob(shm_name(self.vm_id, "*")):
            region.unlink(missing_ok=True)

    # -- serial console --------------------------------------------------------------------------
    def wait_for(self, pattern: bytes | re.Pattern, timeout: float, after: int = 0, what: str = "") -> re.Match:
        """Waits for `pattern` (bytes, or a compiled regex) in the serial output from `after`."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        limit = self.budget.clamp(timeout)
        deadline = time.monotonic() + limit
        while True:
            data = self.serial.poll()
            match = regex.search(data, after)
            if match:
                return match
            panic = data.find(b"Kernel panic", after)
            if panic >= 0:    # the guest reboots at once (panic=-1): no point in waiting on
                raise VmError(f"the guest kernel panicked while waiting for {what or pattern!r} "
                              f"({self.elapsed():.1f} s into the {self.name} boot):\n"
                              + bytes(data[max(after, panic - 3000):panic + 200]).decode("latin-1"))
            if self.processes.vcpu.poll() is not None:
                raise VmError(f"the vCPU process ended (exit code {self.processes.vcpu.returncode}) while "
                              f"waiting for {what or pattern!r}")
            if self.processes.devices.poll() is not None:
                raise VmError(f"the device process ended (exit code {self.processes.devices.returncode}) "
                              f"while waiting for {what or pattern!r}")
            if time.monotonic() >= deadline:
                why = "the module's time budget is spent" if self.budget.spent() else f"{limit:.0f} s"
                raise VmError(f"no {what or pattern!r} on the serial console within {why} "
                              f"({self.elapsed():.1f} s into the {self.name} boot)")
            time.sleep(0.1)

    def type(self, line: str) -> int:
        """Types a line on COM1 through the device process; returns the serial offset before it."""
        mark = len(self.serial.poll())
        client = ControlClient(endpoint(self.vm_id, "control-devices"), timeout_ms=5000)
        try:
            client.call(ops.SerialInput(data=line.encode() + b"\r"))
        except ControlError as error:
            raise VmError(f"serial-input failed: {error}") from None
        finally:
            client.close()
        return mark

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
        """Runs one shell command line; returns its output (everything after the typed line up to
        its end marker). The end marker carries the exit status, computed by the guest so that
        the echo of the typed line never matches."""
        self.commands += 1
        n = self.commands
        end = f'echo "@@{n}:rc=$?@@"'
        mark = self.type(f"{command}; {end}")
        done = re.compile(rb"@@%d:rc=(\d+)@@|(built-in shell \(ash\))" % n)
        match = self.wait_for(done, timeout, after=mark, what=f"the end of {command!r}")
        if match.group(2):
            raise VmError(f"the guest's serial shell died while {command!r} ran (init started a new one)")
        self.wait_for(b"guest# ", 30, after=match.end(), what="the shell prompt")
        text = bytes(self.serial.data[mark:match.start()]).decode("latin-1").replace("\x1b[6n", "")
        # The output starts after the echo of the typed line (which the line editor may wrap).
        echoed = text.find(end[-8:])
        output = text[echoed + 8:].split("\n", 1)[-1] if echoed >= 0 else text
        if check and match.group(1) != b"0":
            raise VmError(f"guest command failed with status {match.group(1).decode()}: {command}\n{output}")
        return output.replace("\r", "")

    # -- diagnostics -----------------------------------------------------------------------------
    def diagnostics(self) -> str:
        lines = [f"{self.name} boot ({self.vm_id}), {self.elapsed():.1f} s in; timings {self.timings}"]
        for label, proc in (("vCPU", self.processes.vcpu), ("devices", self.processes.devices)):
            lines.append(f"{label} process: " + ("not started" if proc is None else
                                                 "running" if proc.poll() is None else f"exit code {proc.returncode}"))
        if self.processes.vcpu is not None and self.processes.vcpu.poll() is None:
            shot = self.workdir / f"screen-{self.name}.png"
            client = ControlClient(endpoint(self.vm_id, "control-vcpu"), timeout_ms=5000)
            try:
                client.call(ops.Screenshot(path=str(shot)))
                lines.append(f"screenshot: {shot}")
            except Exception as error:  # the diagnostics must not hide the failure
                lines.append(f"screenshot failed: {error!r}")
            finally:
                client.close()
        lines.append(f"serial log: {self.serial.path}; it ends with:\n{self.serial.tail()}")
        return "\n".join(lines)
