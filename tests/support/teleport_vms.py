"""VMs that teleport: a counter program's VM (its serial log counts without gaps across a move) and
teleport_in on a thread as the manager's teleport program runs it; for the teleport tests."""

from __future__ import annotations

import threading
import time
import uuid

from services.headless import VmProcesses
from services.ipc.spec import Drive, LaunchSpec
from services.ipc.vrde import VrdeConfig
from services.teleport import wire
from services.teleport.hardware import hardware_config
from services.teleport.target import teleport_in
from services.teleport.vm import TeleportError
from tests.guests.build import build_program
from tests.waiting import free_port

RAM_MIB = 64


BUF_DWORDS = 8192


def counter_lines(path) -> list[str]:
    try:
        text = open(path, "rb").read().decode("latin-1")
    except FileNotFoundError:
        return []
    return [line for line in text.split("\n")[:-1] if line.startswith("n=")]


def wait_lines(path, count: int, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = counter_lines(path)
        if len(lines) >= count:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"{path}: only {len(counter_lines(path))} counter lines after {timeout} s")


class Vm:
    def __init__(self, firmware: str, folder, incoming: bool = False, memory_mib: int = RAM_MIB,
                 accel: str = "tcg", cpuid: list | None = None, rdp_port: int | None = None,
                 drives: list | None = None):
        vm_id = "tp" + uuid.uuid4().hex[:8]
        self.spec = LaunchSpec(vm_id=vm_id, memory_mib=memory_mib, accel=accel, firmware=firmware, boot=(),
                               serial_log=str(folder / f"{uuid.uuid4().hex[:6]}.log"), incoming=incoming,
                               cpuid=cpuid or [], drives=[Drive.parse(d) for d in drives or []],
                               vrde=VrdeConfig.listening(rdp_port, vm_id) if rdp_port else None)
        self.rdp_port = rdp_port
        self.processes = VmProcesses(self.spec)
        self.processes.start(ram_timeout=120)
        self.exit_code = None
        self.waiter = threading.Thread(target=self._wait, daemon=True)
        self.waiter.start()

    def _wait(self):
        self.exit_code = self.processes.wait()

    @property
    def log(self):
        return self.spec.serial_log

    @property
    def running(self) -> bool:
        return self.waiter.is_alive()

    def close(self):
        if self.waiter.is_alive():
            self.processes.kill()
            self.waiter.join(10)


class Target:
    """teleport_in on a thread, as the manager runs it."""

    def __init__(self, vm: Vm, password: str = "", port: int | None = None, wait_s: float = 120):
        self.vm, self.port = vm, port or free_port()
        self.result = self.error = None
        self.listening = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(wire.hash_password(password), wait_s), daemon=True)
        self.thread.start()
        assert self.listening.wait(10), "the target did not start listening"

    def _run(self, password_hash, wait_s):
        try:
            self.result = teleport_in(self.vm.spec.vm_id, hardware_config(self.vm.spec), "127.0.0.1", self.port,
                                      password_hash, wait_s=wait_s, on_listening=lambda p: self.listening.set())
        except TeleportError as error:
            self.error = str(error)
            self.listening.set()


def counter_firmware(folder) -> str:
    """The counter program as a firmware image in folder; returns its path."""
    path = folder / "counter.bin"
    path.write_bytes(build_program("counter", {"BUF_DWORDS": BUF_DWORDS, "OUT_PORT": 0x3F8}))
    return str(path)
