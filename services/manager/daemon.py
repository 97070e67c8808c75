"""The manager daemon: one per settings home, serving the control socket (docs/control-api.md).

Requests are read by one ROUTER loop and answered by a small worker pool, so a long controlvm does not
hold up a ping; settings are used under one lock; nothing a client sends can stop the daemon."""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import inspect
import logging
import os
import threading
import time

import msgpack
import zmq

from services.manager import client as paths
from services.manager import savedstate
from services.manager.errors import E_FAIL, E_INVALIDARG, INVALID_VM_STATE, ManagerError
from services.manager.jobs import Jobs
from services.manager.runtime import Runtime
from services.private_file import private_folder, write_private

log = logging.getLogger("headbox.manager")

VERSION = "0.1"
SETTINGS_OPS = ("list", "createvm", "registervm", "unregistervm", "modifyvm", "createmedium", "openmedium",
                "closemedium", "storagectl", "storageattach", "showvminfo", "setextradata", "getextradata",
                "setproperty")
JOB_SETTINGS_OPS = ("createmedium",)     # long: run as jobs with progress
RUNTIME_OPS = ("startvm", "controlvm", "vmstate", "launchspec", "session")
REPLIES = "inproc://headbox-manager-replies"


class AlreadyRunning(Exception):
    pass


class PidLock:
    """<home>/manager.pid, locked for the daemon's life: the lock, not the file, says a daemon runs."""

    def __init__(self, home: str):
        self.path = os.path.join(home, "manager.pid")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        # A client probing the lock holds it shared for microseconds: retry briefly (not longer, or
        # a loser of a start race could take over from a winner that already exited).
        deadline = time.monotonic() + 0.2
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    other = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
                    os.close(self.fd)
                    raise AlreadyRunning(f"a manager already serves {home} (pid {other or '?'})") from None
                time.sleep(0.005)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self.fd)


def bind_local(context: zmq.Context, home: str) -> tuple[zmq.Socket, str]:
    """The ROUTER on ipc://<home>/manager.sock, or, when that path is too long for a unix socket, in a
    0700 runtime folder named after the home, with <home>/manager.endpoint pointing at it."""
    if paths.socket_path_fits(home):
        path = os.path.join(home, "manager.sock")
    else:
        from services.ipc.naming import runtime_root
        digest = hashlib.sha256(home.encode()).hexdigest()[:16]
        folder = private_folder(os.path.join(runtime_root(), "manager-" + digest))
        path = os.path.join(folder, "manager.sock")
        pointer = os.path.join(home, "manager.endpoint")
        write_private(pointer, f"ipc://{path}\n")
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"ipc://{path}")
    os.chmod(path, 0o600)
    return sock, path


def make_settings(home: str, runtime: Runtime):
    """The settings engine, told how to ask for a VM's run state (it refuses most changes to a
    running VM and reports the state in showvminfo)."""
    try:
        from services.manager.settings import Settings
    except ImportError as error:
        log.error("no settings engine (%s): only daemon and job operations are served", error)
        return None
    parameters = inspect.signature(Settings).parameters
    for name in ("runtime", "vm_state", "state_of"):
        if name in parameters:
            return Settings(home, **{name: runtime if name == "runtime" else runtime.state_of})
    return Settings(home)


class Daemon:
    def __init__(self, home: str, idle_exit: float | None = None, tcp: str | None = None):
        self.home = home
        self.idle_exit = idle_exit
        self.tcp = tcp
        self.jobs = Jobs()
        self.settings_lock = threading.RLock()
        self.runtime = Runtime(home, None, self.settings_lock, self.jobs)
        self.settings = self.runtime.settings = make_settings(home, self.runtime)
        self.context = zmq.Context.instance()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="request")
        self.outbox = threading.local()
        self.pending = 0
        self.last_activity = time.monotonic()
        self.exiting = False

    # -- the loop --------------------------------------------------------------------------------
    def _configured_endpoint(self) -> str | None:
        """`setproperty controlendpoint tcp://...` applies when no --tcp is given."""
        if self.settings is None:
            return None
        try:
            with self.settings_lock:
                rows = self.settings.list(what="systemproperties")
        except ManagerError as error:
            log.warning("system properties unreadable: %s", error)
            return None
        value = next((row.get("value") for row in rows if row.get("key") == "controlendpoint"), None)
        return value if isinstance(value, str) and value.startswith("tcp://") else None

    def serve(self, ready=None) -> None:
        self.tcp = self.tcp or self._configured_endpoint()
        local, path = bind_local(self.context, self.home)
        replies = self.context.socket(zmq.PULL)
        replies.bind(REPLIES)
        sockets = {"local": local}
        auth = monitor = None
        if self.tcp:
            from services.manager import curve
            auth = curve.start_authenticator(self.context, self.home)
            sockets["tcp"] = curve.make_server_socket(self.context, self.home, self.tcp)
            monitor = sockets["tcp"].get_monitor_socket(
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
            log.info("listening on %s (CurveZMQ)", self.tcp)
        self.runtime.start()
        poller = zmq.Poller()
        for sock in (*sockets.values(), replies):
            poller.register(sock, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        by_socket = {sock: name for name, sock in sockets.items()}
        log.info("manager %d serving %s on ipc://%s", os.getpid(), self.home, path)
        if ready:
            ready()
        tick_ms = 500 if self.idle_exit is None else max(10, min(500, int(self.idle_exit * 500)))
        try:
            while True:
                for sock, _ in poller.poll(tick_ms):
                    if sock is replies:
                        name, frames = replies.recv_pyobj()
                        sockets[name].send_multipart(frames)
                        self.pending -= 1
                        self.last_activity = time.monotonic()
                    elif sock is monitor:
                        self._log_refusal(monitor)
                    else:
                        frames = sock.recv_multipart()
                        self.pending += 1
                        self.last_activity = time.monotonic()
                        self.pool.submit(self._answer, by_socket[sock], frames)
                if self.pending == 0 and (self.exiting or self._idle()):
                    break
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.runtime.close(stop_supervisor=True)
            if monitor is not None:
                sockets["tcp"].disable_monitor()
                monitor.close()
            for sock in sockets.values():
                sock.close()
            replies.close()
            if auth is not None:
                auth.stop()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            log.info("manager %d exits", os.getpid())

    def _idle(self) -> bool:
        if self.idle_exit is None or self.runtime.busy() or self.jobs.busy():
            return False
        if time.monotonic() - self.last_activity < self.idle_exit:
            return False
        log.info("idle for %g s with no VM running: exiting", self.idle_exit)
        return True

    def _log_refusal(self, monitor: zmq.Socket) -> None:
        from zmq.utils.monitor import recv_monitor_message
        event = recv_monitor_message(monitor)
        endpoint = event.get("endpoint", b"")
        endpoint = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else endpoint
        log.warning("refused a TCP client on %s: CurveZMQ handshake failed (%s, %s)", endpoint,
                    zmq.Event(event["event"]).name, event.get("value"))

    def _answer(self, name: str, frames: list[bytes]) -> None:
        """A worker: decode, dispatch, encode; the reply goes back through the loop's PULL socket."""
        envelope, payload = frames[:-1], frames[-1]
        try:
            reply = {"ok": True, "result": self.dispatch(payload)}
        except ManagerError as error:
            reply = {"ok": False, "error": error.to_wire()}
        except Exception as error:   # never the daemon's death; the client gets one line
            log.exception("request failed")
            reply = {"ok": False, "error": {"code": E_FAIL, "message": f"internal error: {error}"}}
        try:
            data = msgpack.packb(reply, use_bin_type=True)
        except (TypeError, ValueError) as error:
            log.error("reply not encodable: %s", error)
            data = msgpack.packb({"ok": False, "error": {"code": E_FAIL, "message": "reply not encodable"}})
        out = getattr(self.outbox, "sock", None)
        if out is None:
            out = self.outbox.sock = self.context.socket(zmq.PUSH)
            out.connect(REPLIES)
        out.send_pyobj((name, [*envelope, data]))

    # -- dispatch --------------------------------------------------------------------------------
    def dispatch(self, payload: bytes):
        try:
            request = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception:  # noqa: BLE001 - msgpack raises several types for garbage
            raise ManagerError(E_INVALIDARG, "malformed request (not msgpack)") from None
        if not isinstance(request, dict) or request.get("v") != paths.PROTOCOL_VERSION:
            raise ManagerError(E_INVALIDARG, f"malformed request (expected a map with v={paths.PROTOCOL_VERSION})")
        op = request.get("op")
        log.debug("request %r", op)
        fields = {k: v for k, v in request.items() if k not in ("v", "op")}
        if not all(isinstance(k, str) for k in fields):
            raise ManagerError(E_INVALIDARG, "malformed request (field names must be strings)")
        if op in ("ping", "shutdown", "job", "canceljob"):
            method = getattr(self, f"op_{op}")
        elif op in RUNTIME_OPS:
            method = getattr(self.runtime, op)
        elif op in SETTINGS_OPS:
            return self._settings_op(op, fields)
        else:
            raise ManagerError(E_INVALIDARG, f"unknown operation {op!r}")
        _check_fields(op, method, fields)
        return method(**fields)

    def _settings_op(self, op: str, fields: dict):
        if op == "list" and fields.get("what") == "runningvms":
            return self._running_vms()
        method = getattr(self.settings, op, None) if self.settings is not None else None
        if method is None:
            raise ManagerError(E_FAIL, f"{op} is not available yet")
        _check_fields(op, method, fields)
        if op in JOB_SETTINGS_OPS:
            takes_progress = "progress" in inspect.signature(method).parameters

            def work(job):
                with self.settings_lock:
                    return method(**fields, progress=job.progress) if takes_progress else method(**fields)
            return {"job": self.jobs.start(op, work)}
        with self.settings_lock:
            # A deleted VM's saved state goes with it (it lives under the home, not the VM folder).
            doomed = self.settings.vm_uuid(fields["vm"]) if op == "unregistervm" and fields.get("delete") \
                and isinstance(fields.get("vm"), str) else None
            result = method(**fields)
        if doomed and savedstate.exists(self.home, doomed):
            os.unlink(savedstate.path_for(self.home, doomed))
        if op == "showvminfo" and isinstance(result, dict) and result.get("uuid"):
            result.update(self.runtime.state_of(result["uuid"]))
            result["vrde_clients"] = self.runtime.vrde_clients(result["uuid"], result.get("vrde_port_bound"))
        # A running VM's RDP server follows its settings: its own, global extradata (VBoxAuthSimple
        # users) and the global VRDE auth library.
        target = fields.get("vm", fields.get("target")) if op in ("modifyvm", "setextradata") else None
        if isinstance(target, str) and target != "global":
            self.runtime.refresh_vrde(target)
        elif target == "global" or op == "setproperty":
            for uuid in self.runtime.running_uuids():
                self.runtime.refresh_vrde(uuid)
        return result

    def _running_vms(self) -> list[dict]:
        running = []
        for uuid in self.runtime.running_uuids():
            with self.runtime.lock:
                run = self.runtime.vms.get(uuid)
            if run is not None:
                running.append({"name": run.name, "uuid": uuid})
        return running

    def op_ping(self) -> dict:
        return {"pid": os.getpid(), "home": self.home, "version": VERSION}

    def op_shutdown(self) -> None:
        if self.runtime.busy():
            raise ManagerError(INVALID_VM_STATE, "VMs are running; power them off first")
        log.info("shutdown requested")
        self.exiting = True

    def op_job(self, job=None) -> dict:
        return self.jobs.get(job).view()

    def op_canceljob(self, job=None) -> None:
        self.jobs.cancel(job)


def _check_fields(op: str, method, fields: dict) -> None:
    try:
        inspect.signature(method).bind(**fields)
    except TypeError as error:
        raise ManagerError(E_INVALIDARG, f"{op}: {error}") from None
