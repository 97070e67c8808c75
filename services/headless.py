"""Runs one VM in the foreground as its processes: the vCPU process, the device process and the RDP
server, all told by one launch spec (services/ipc/spec.py).

This is the core of `VBoxHeadless --startvm`: it starts them, ties their lifetimes together and
says in the VM log why the VM ended (the guest powered off, a process failed)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import zmq

from services.demo.linux_iso import linux_iso
from services.ipc import ops
from services.ipc.control import ControlError, call
from services.ipc.naming import endpoint, remove_regions, remove_runtime_dir
from services.ipc.spec import Drive, LaunchSpec, SpecError, process_argv
from services.ipc.vrde import VrdeConfig

log = logging.getLogger("headbox.vm")



# A hard power-off stops the vCPUs at once; a process still there after this is hung and killed
# (within the 5 s systemd and timeout give before their SIGKILL).
POWER_OFF_TIMEOUT_S = 4.0

class VmProcesses:
    """The processes of a running VM: vCPU, devices and, when the spec has VRDE settings, the RDP
    server, all told by the launch spec written into the VM's runtime folder."""

    def __init__(self, spec: LaunchSpec, env: dict | None = None):
        self.spec = spec
        self.env = env or dict(os.environ)
        self.vcpu: subprocess.Popen | None = None
        self.devices: subprocess.Popen | None = None
        self.vrdp: subprocess.Popen | None = None
        self._vrdp_backoff = 0.5
        self._vrdp_retry_at = 0.0
        self._vcpu_ready = False

    def start(self, ram_timeout: float = 20.0) -> None:
        """Start both processes and wait until each answers on its control socket. A process that
        fails to start raises RuntimeError with its one-line error (a missing or corrupt image,
        no firmware, too much RAM); the other process is stopped then."""
        self.spec_file = self.spec.save()
        self.vcpu = self._spawn(self._argv("vcpu"), "headbox-vcpu")
        self._await_ready(self.vcpu, "control-vcpu", "vCPU", ram_timeout)
        self._vcpu_ready = True
        self.devices = self._spawn(self._argv("devices"), "headbox-devices")
        self._await_ready(self.devices, "control-devices", "device", ram_timeout)
        self._start_vrdp()

    def _argv(self, program: str) -> list[str]:
        return process_argv(program, self.spec_file, sys.executable)

    def _start_vrdp(self) -> None:
        vrde = self.spec.vrde
        if vrde is None or not vrde.enabled:
            return
        self.vrdp = subprocess.Popen(self._argv("vrdp"), env=self.env)
        log.info("VM %s: RDP server on %s, port(s) %s", self.spec.vm_id, vrde.address or "every address",
                 vrde.ports)

    def _spawn(self, argv: list[str], prog: str) -> subprocess.Popen:
        """Start a child whose stderr passes through to ours, except its "PROG: error: ..." line,
        which is kept (proc.error_line) for the one error line this runner prints."""
        proc = subprocess.Popen(argv, env=self.env, stderr=subprocess.PIPE)
        proc.error_line = None
        prefix = f"{prog}: error: ".encode()

        def forward():
            for line in proc.stderr:
                if line.startswith(prefix) and proc.error_line is None:
                    proc.error_line = line[len(prefix):].decode(errors="replace").strip()
                    continue
                try:
                    os.write(2, line)
                except OSError:
                    pass
            proc.stderr.close()

        proc.forwarder = threading.Thread(target=forward, name=f"{prog}-stderr", daemon=True)
        proc.forwarder.start()
        return proc

    def _await_ready(self, proc: subprocess.Popen, channel: str, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                proc.forwarder.join(2)
                raise RuntimeError(proc.error_line or f"the {what} process of VM {self.spec.vm_id} "
                                   f"exited with code {proc.returncode}")
            try:
                # The pid tells our process from another VM of the same name.
                if call(endpoint(self.spec.vm_id, channel), ops.Status(), timeout_ms=200).get("pid") == proc.pid:
                    return
            except (ControlError, zmq.ZMQError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {what} process of VM {self.spec.vm_id} did not start in {timeout} s")

    def wait(self) -> int:
        """Until the VM ends; then both processes are gone. Returns the vCPU process's exit code."""
        while True:
            code = self.vcpu.poll()
            if code is not None:
                log.info("VM %s: the vCPU process ended (%s)", self.spec.vm_id,
                         "the guest powered off" if code == 0 else f"exit code {code}")
                self._stop_vrdp()
                self._stop_devices()
                remove_runtime_dir(self.spec.vm_id)
                return code
            if self.vrdp is not None and self.vrdp.poll() is not None and time.monotonic() >= self._vrdp_retry_at:
                # The RDP server's crash must not stop the guest: restart it, clients reconnect.
                # One that keeps failing (its port taken) is retried less and less often.
                self._vrdp_backoff = min(self._vrdp_backoff * 2, 60.0)
                log.warning("VM %s: the RDP server exited (code %s); restarting it",
                            self.spec.vm_id, self.vrdp.returncode)
                self._vrdp_retry_at = time.monotonic() + self._vrdp_backoff
                self._start_vrdp()
            if self.devices.poll() is not None:
                self.devices.forwarder.join(2)
                log.error("VM %s: the device process died (exit code %s%s); stopping the VM",
                          self.spec.vm_id, self.devices.returncode,
                          f": {self.devices.error_line}" if self.devices.error_line else "")
                self.kill()
                return 1
            time.sleep(0.1)

    def _stop_vrdp(self) -> None:
        if self.vrdp is not None and self.vrdp.poll() is None:
            self.vrdp.terminate()
            try:
                self.vrdp.wait(5)
            except subprocess.TimeoutExpired:
                self.vrdp.kill()
                self.vrdp.wait()

    def _stop_devices(self) -> None:
        if self.devices is None or self.devices.poll() is not None:
            return
        try:
            call(endpoint(self.spec.vm_id, "control-devices"), ops.Stop(), timeout_ms=3000)
        except (ControlError, zmq.ZMQError):
            pass    # it is killed below if it does not end
        try:
            self.devices.wait(5)
        except subprocess.TimeoutExpired:
            self.devices.kill()
            self.devices.wait()

    def power_off(self) -> None:
        """As the guest's own power-off: the vCPU stops, then the RDP server and the device process
        (which flushes the disks); whatever does not stop in time is killed."""
        if self.vcpu is not None and self.vcpu.poll() is None:
            try:
                call(endpoint(self.spec.vm_id, "control-vcpu"), ops.PowerOff(), timeout_ms=5000)
                self.vcpu.wait(POWER_OFF_TIMEOUT_S)
            except (ControlError, zmq.ZMQError, subprocess.TimeoutExpired):   # killed below
                pass
        if self.vcpu is not None and self.vcpu.poll() is not None:
            self._stop_vrdp()
            self._stop_devices()
        self.kill()

    def kill(self) -> None:
        vcpu_killed = self._vcpu_ready and self.vcpu.poll() is None
        for proc in (self.vrdp, self.vcpu, self.devices):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if vcpu_killed:
            remove_regions(self.spec.vm_id)
        remove_runtime_dir(self.spec.vm_id)


class Stopped(Exception):
    """SIGTERM or SIGHUP (timeout, systemd, kill, a closed terminal): the VM is stopped with us."""


def _stop_on_signal(signum, _frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="headbox-vm", description="Run one VM in the foreground.")
    parser.add_argument("--name", default="demo", help="VM id (runtime folder and shared-memory names)")
    parser.add_argument("--memory", type=int, default=256, metavar="MiB")
    parser.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    parser.add_argument("--iso", help="ISO image in the DVD drive (secondary master)")
    parser.add_argument("--hdd", help="disk image (primary master): VDI or raw")
    parser.add_argument("--demo", action="store_true", help="boot the built-in demo guest")
    parser.add_argument("--serial-log", help="file for COM1's output")
    parser.add_argument("--boot", default="dvd,disk")
    parser.add_argument("--rdp-port", type=int, default=3389, help="RDP port (0: no RDP server)")
    parser.add_argument("--rdp-address", default="127.0.0.1",
                        help="address the RDP server listens on (default: loopback only)")
    parser.add_argument("--state-dir", default=os.path.expanduser("~/.config/Headbox"),
                        help="where the RDP server keeps its TLS certificate and key (0600)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    iso = args.iso
    if args.demo:
        iso = str(linux_iso())      # built from Debian's packages on first use, cached
    drives = []
    if args.hdd:
        drives.append(Drive(0, 0, "hdd", os.path.abspath(args.hdd)))
    drives.append(Drive(1, 0, "dvd", os.path.abspath(iso) if iso else None))
    vrde = None
    if args.rdp_port:
        vrde = VrdeConfig(vm_name=args.name, enabled=True, ports=str(args.rdp_port), address=args.rdp_address,
                          state_dir=args.state_dir)
    spec = LaunchSpec(vm_id=args.name, memory_mib=args.memory, accel=args.accel, drives=drives,
                      boot=tuple(args.boot.split(",")), serial_log=args.serial_log, vrde=vrde)
    vm = VmProcesses(spec)
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _stop_on_signal)
    try:
        vm.start()
        return vm.wait()
    except (KeyboardInterrupt, Stopped) as stop:
        for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(number, signal.SIG_IGN)     # a second signal must not cut the power-off short
        log.info("VM %s: %s: powering off", spec.vm_id, stop or "SIGINT")
        vm.power_off()
        return 130 if isinstance(stop, KeyboardInterrupt) else 143
    except (RuntimeError, SpecError) as error:
        vm.kill()
        print(f"headbox-vm: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
