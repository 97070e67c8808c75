"""The Python client of the manager's control socket (what VBoxManage and VBoxHeadless are built on).

Imports stay light (zmq, msgpack): a CLI call is one process start and one round trip. connect_or_start
starts the home's daemon on demand; two CLIs doing so at once end up talking to the same daemon."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import msgpack
import zmq

from services.manager.errors import E_FAIL, IPRT_ERROR, ManagerError
from services.private_file import UnsafeFolder, private_folder

PROTOCOL_VERSION = 1
DEFAULT_TIMEOUT_MS = 120_000
UNIX_PATH_MAX = 107
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_home() -> str:
    return os.path.abspath(os.environ.get("VBOX_USER_HOME") or os.path.expanduser("~/.config/Headbox"))


def socket_path_fits(home: str) -> bool:
    return len(os.path.join(home, "manager.sock").encode()) <= UNIX_PATH_MAX


def local_endpoint(home: str) -> str:
    """ipc://<home>/manager.sock, or (a home too deep for a unix socket path) what the daemon wrote
    into <home>/manager.endpoint."""
    if socket_path_fits(home):
        return "ipc://" + os.path.join(home, "manager.sock")
    try:
        with open(os.path.join(home, "manager.endpoint"), encoding="utf-8") as file:
            return file.read().strip()
    except FileNotFoundError:
        raise ManagerError(IPRT_ERROR, f"no manager runs for {home} (no manager.endpoint)") from None


def _pid_of(home: str) -> str:
    try:
        with open(os.path.join(home, "manager.pid"), encoding="ascii") as file:
            return file.read().strip() or "?"
    except OSError:
        return "?"


def daemon_running(home: str) -> bool:
    """The daemon holds an exclusive lock on <home>/manager.pid for its whole life."""
    try:
        fd = os.open(os.path.join(home, "manager.pid"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class ManagerClient:
    def __init__(self, home: str | None = None, endpoint: str | None = None,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, curve_server_key: bytes | None = None,
                 curve_client_keys: tuple[bytes, bytes] | None = None):
        self.home = os.path.abspath(home) if home else default_home()
        self.endpoint = endpoint or local_endpoint(self.home)
        self.timeout_ms = timeout_ms
        self.curve_server_key = curve_server_key
        self.curve_client_keys = curve_client_keys
        self.context = zmq.Context.instance()
        self.socket = None

    def _open(self) -> zmq.Socket:
        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve_server_key:
            public, secret = self.curve_client_keys or zmq.curve_keypair()
            sock.curve_serverkey = self.curve_server_key
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        sock.connect(self.endpoint)
        return sock

    def request(self, op: str, timeout_ms: int | None = None, **fields):
        """One request, one reply: the result, or ManagerError with the manager's code and message."""
        if self.socket is None:
            self.socket = self._open()
        self.socket.send(msgpack.packb({"v": PROTOCOL_VERSION, "op": op, **fields}, use_bin_type=True))
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        if not self.socket.poll(timeout):
            # A REQ socket that lost its reply cannot send again: start over with a new one.
            self.socket.close()
            self.socket = None
            raise ManagerError(E_FAIL, f"the manager at {self.endpoint} did not answer within "
                               f"{timeout / 1000:g} s")
        reply = msgpack.unpackb(self.socket.recv(), raw=False, strict_map_key=False)
        if not isinstance(reply, dict):
            raise ManagerError(E_FAIL, "the manager sent a malformed reply")
        if reply.get("ok"):
            return reply.get("result")
        raise ManagerError.from_wire(reply.get("error") or {})

    def wait_job(self, job_id, on_progress=None, poll_s: float = 0.1):
        """Poll a job until it ends; on_progress(percent) on each change. Its result, or ManagerError."""
        last = None
        while True:
            state = self.request("job", job=job_id)
            if on_progress is not None and state["percent"] != last:
                last = state["percent"]
                on_progress(last)
            if state["done"]:
                if state.get("error"):
                    raise ManagerError.from_wire(state["error"])
                return state.get("result")
            time.sleep(poll_s)

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def own_home(home: str) -> None:
    """The settings home is this user's alone, created 0700 when missing: a daemon socket or settings
    in another user's folder would be theirs to forge."""
    os.makedirs(os.path.dirname(home), mode=0o700, exist_ok=True)
    try:
        private_folder(home)
    except UnsafeFolder as error:
        raise ManagerError(IPRT_ERROR, f"the settings home {error}") from None


def start_daemon(home: str, extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """The daemon for `home`, detached from our session (it outlives the CLI that started it)."""
    own_home(home)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    # Its stderr (a failure before its logging is set up) goes to the same log as its log lines.
    log_fd = os.open(os.path.join(home, "manager.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen([sys.executable, "-m", "services.manager", "--home", home, *extra_args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_fd,
                                cwd=REPO_ROOT, env=env, start_new_session=True)
    finally:
        os.close(log_fd)


def connect_or_start(home: str | None = None, timeout_s: float = 20.0, **client_args) -> ManagerClient:
    """A client of the home's daemon, started first if none runs. Two callers racing both start one;
    the pid-file lock lets only one serve, and both then reach it."""
    home = os.path.abspath(home) if home else default_home()
    own_home(home)
    deadline = time.monotonic() + timeout_s
    while daemon_running(home):
        # One ping: a daemon idling out right now would leave a request unanswered.
        client = ManagerClient(home=home, **client_args)
        try:
            client.request("ping", timeout_ms=1000)
            return client
        except ManagerError:
            client.close()
        if time.monotonic() > deadline:
            raise ManagerError(IPRT_ERROR, f"the manager for {home} does not answer (pid "
                               f"{_pid_of(home)}); see {os.path.join(home, 'manager.log')}")
    process = start_daemon(home)
    while True:
        if daemon_running(home) and (socket_path_fits(home) or os.path.exists(os.path.join(home, "manager.endpoint"))):
            client = ManagerClient(home=home, **client_args)
            try:
                pid = client.request("ping", timeout_ms=500)["pid"]
            except ManagerError:
                client.close()
            else:
                if pid != process.pid and process.poll() is None:
                    # Ours lost the race but may still be starting; left alone it would take over
                    # once the winner exits.
                    process.terminate()
                    process.wait(5)
                return client
        elif process.poll() not in (None, 0) and not daemon_running(home):
            raise ManagerError(IPRT_ERROR, f"the manager for {home} failed to start (exit code "
                               f"{process.returncode}; see {os.path.join(home, 'manager.log')})")
        if time.monotonic() > deadline:
            raise ManagerError(IPRT_ERROR, f"the manager for {home} did not answer within {timeout_s:g} s")
        time.sleep(0.02)
