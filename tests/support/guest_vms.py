"""Whole-VM runners for guest tests and benchmarks: our VMM and QEMU TCG (the reference), each with
its serial console (COM1) and the SeaBIOS debug port (0x402) timestamped on arrival.

- OurVm: services.headless.VmProcesses (the vCPU process + the device process), unchanged. COM1
  goes to the serial log file and the debug port to the debug log file; a thread polls both files
  every POLL_S (10 ms) and timestamps each new chunk, so our times are late by at most ~10 ms.
  Typing goes through the device process's control op "serial-input". The VM is stopped with the
  vCPU control op "poweroff" (so its shared-memory regions are released), then killed if need be.
  Every VM gets a private XDG_RUNTIME_DIR, like tests/integration/test_linux_guest.py.
- QemuVm: qemu-system-x86_64 -accel tcg; serial and isa-debugcon (0x402) are unix-socket chardevs
  this process listens on; a reader thread drains each continuously (QEMU blocks on a full socket)
  and timestamps every chunk as it arrives (research/peers.md §3). Typing writes to the socket.

Time 0 is just before the first Popen of the VM (for ours: the vCPU process).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

from services.ipc import ops

POLL_S = 0.010
SEABIOS = "/usr/share/seabios/bios.bin"     # our DEFAULT_FIRMWARE; given to QEMU too (-bios)


class Stream:
    """Bytes of one guest output with the host time (s since the VM's start) of each chunk."""

    def __init__(self):
        self.data = bytearray()
        self.chunks: list[tuple[int, float]] = []    # (end offset, time)
        self.cond = threading.Condition()
        self.closed = False

    def add(self, data: bytes, t: float) -> None:
        with self.cond:
            self.data += data
            self.chunks.append((len(self.data), t))
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def time_of(self, offset: int) -> float:
        """Arrival time of the byte at `offset`."""
        for end, t in self.chunks:
            if offset < end:
                return t
        raise IndexError(offset)

    def first(self) -> float | None:
        return self.chunks[0][1] if self.chunks else None

    def find(self, marker: bytes, after: int = 0) -> int:
        with self.cond:
            return bytes(self.data).find(marker, after)

    def wait(self, marker: bytes, timeout: float, after: int = 0, alive=None) -> int:
        """Offset of `marker` (searched from `after`); raises TimeoutError with the tail."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                pos = bytes(self.data).find(marker, after)
                if pos >= 0:
                    return pos
                left = deadline - time.monotonic()
                if left <= 0 or self.closed or (alive is not None and not alive()):
                    tail = bytes(self.data[-600:]).decode("latin-1")
                    raise TimeoutError(f"no {marker!r} within {timeout:.0f} s; output ends with:\n{tail}")
                self.cond.wait(min(left, 0.5))

    def text(self, start: int = 0) -> str:
        with self.cond:
            return bytes(self.data[start:]).decode("latin-1")


class OurVm:
    def __init__(self, *, iso: str | None = None, hdd: str | None = None, memory_mib: int = 512,
                 accel: str = "tcg", boot=("dvd", "disk"), nics=()):
        from services.ipc.spec import Drive, LaunchSpec
        self.tmp = tempfile.mkdtemp(prefix="hb-bench-vm-")
        self.vm_id = "bench" + uuid.uuid4().hex[:6]
        drives = [Drive(0, 0, "hdd", os.path.abspath(hdd))] if hdd else []
        drives.append(Drive(1, 0, "dvd", os.path.abspath(iso) if iso else None))
        self.serial_path = os.path.join(self.tmp, "serial.log")
        self.debug_path = os.path.join(self.tmp, "debug.log")
        self.spec = LaunchSpec(vm_id=self.vm_id, memory_mib=memory_mib, accel=accel, drives=drives,
                               boot=tuple(boot), serial_log=self.serial_path, debug_log=self.debug_path,
                               nics=list(nics))
        self.serial, self.debug = Stream(), Stream()
        self.vm = None
        self._stop = False
        self._old_runtime = os.environ.get("XDG_RUNTIME_DIR")

    def start(self, env_extra: dict | None = None) -> None:
        from services.headless import VmProcesses
        for path in (self.serial_path, self.debug_path):
            open(path, "wb").close()
        os.environ["XDG_RUNTIME_DIR"] = self.tmp     # our control clients must find the same sockets
        env = dict(os.environ, **(env_extra or {}))
        self.vm = VmProcesses(self.spec, env=env)
        self.t0 = time.monotonic()
        self.vm.start()
        self._tail = threading.Thread(target=self._tail_loop, daemon=True)
        self._tail.start()

    def _tail_loop(self) -> None:
        files = [(open(self.serial_path, "rb"), self.serial), (open(self.debug_path, "rb"), self.debug)]
        while not self._stop:
            for f, stream in files:
                data = f.read()
                if data:
                    stream.add(data, time.monotonic() - self.t0)
            time.sleep(POLL_S)
        for f, stream in files:
            f.close()
            stream.close()

    def alive(self) -> bool:
        return self.vm is not None and self.vm.vcpu.poll() is None and self.vm.devices.poll() is None

    @property
    def vcpu_pid(self) -> int:
        return self.vm.vcpu.pid

    @property
    def devices_pid(self) -> int:
        return self.vm.devices.pid

    def type(self, text: str) -> int:
        """Types `text` on COM1; returns the serial offset before it."""
        from services.ipc.control import ControlClient
        from services.ipc.naming import endpoint
        mark = len(self.serial.data)
        client = ControlClient(endpoint(self.vm_id, "control-devices"), timeout_ms=10000)
        try:
            client.call(ops.SerialInput(data=text.encode()))
        finally:
            client.close()
        return mark

    def stop(self) -> None:
        from services.ipc.control import ControlClient
        from services.ipc.naming import endpoint
        if self.vm is not None and self.vm.vcpu is not None and self.vm.vcpu.poll() is None:
            client = ControlClient(endpoint(self.vm_id, "control-vcpu"), timeout_ms=5000)
            try:
                client.call(ops.PowerOff())
            except Exception:
                pass
            finally:
                client.close()
            try:
                self.vm.vcpu.wait(15)
            except subprocess.TimeoutExpired:
                pass
            if self.vm.vcpu.poll() is not None:
                self.vm._stop_devices()
        if self.vm is not None:
            self.vm.kill()
        self._stop = True
        for region in ("ram", "vram", "surface"):     # only after a kill: ours alone, by name
            try:
                os.unlink(f"/dev/shm/headbox-{self.vm_id}-{region}")
            except OSError:
                pass
        if self._old_runtime is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = self._old_runtime
        shutil.rmtree(self.tmp, ignore_errors=True)


class QemuVm:
    def __init__(self, args: list[str], memory_mib: int = 512, bios: str | None = SEABIOS):
        qemu = shutil.which("qemu-system-x86_64")
        if not qemu:
            raise RuntimeError("qemu-system-x86_64 is missing: run scripts/setup")
        self.tmp = tempfile.mkdtemp(prefix="hb-bench-qemu-")
        self.listeners = {}
        for name in ("serial", "debug"):
            path = os.path.join(self.tmp, f"{name}.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            sock.listen(1)
            sock.settimeout(20)
            self.listeners[name] = (sock, path)
        self.cmd = [qemu, "-accel", "tcg", "-m", str(memory_mib), "-nodefaults", "-vga", "std",
                    "-display", "none", "-monitor", "none", "-no-reboot",
                    "-chardev", f"socket,id=ser0,path={self.listeners['serial'][1]}", "-serial", "chardev:ser0",
                    "-chardev", f"socket,id=dbg,path={self.listeners['debug'][1]}",
                    "-device", "isa-debugcon,iobase=0x402,chardev=dbg"]
        if bios:
            self.cmd += ["-bios", bios]
        self.cmd += args
        self.serial, self.debug = Stream(), Stream()
        self.proc = None
        self.conns = {}

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for name, stream in (("serial", self.serial), ("debug", self.debug)):
            try:
                conn, _ = self.listeners[name][0].accept()
            except socket.timeout:
                self.proc.kill()
                raise RuntimeError("QEMU did not connect its chardevs: " + self.proc.communicate()[1].decode())
            self.conns[name] = conn
            threading.Thread(target=self._reader, args=(conn, stream), daemon=True).start()

    def _reader(self, conn, stream: Stream) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                stream.close()
                return
            stream.add(data, time.monotonic() - self.t0)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def type(self, text: str) -> int:
        mark = len(self.serial.data)
        self.conns["serial"].sendall(text.encode())
        return mark

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for conn in self.conns.values():
            conn.close()
        for sock, _ in self.listeners.values():
            sock.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
