"""The supervisor that runs VM process groups: the one we run under (the appliance), or our own.

Our own supervisord is started on demand, daemonized, with its configuration, logs and 0600 socket in
<home>/supervisor/, so restarting the manager leaves running VMs alone. Groups are talked to over XML-RPC."""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
import xmlrpc.client
from dataclasses import dataclass

from services.private_file import private_folder, write_private

log = logging.getLogger("headbox.manager")

UNIX_PATH_MAX = 107   # sun_path is 108 bytes with the NUL


class SupervisorError(Exception):
    """supervisord could not be reached or refused a call; the message is one line for the user."""


def private_socket_dir(home: str, folder: str) -> str:
    """A 0700 folder for a socket of `home`: <home>/<folder> if socket paths there fit the unix limit,
    else a per-home folder under the runtime root (the path is derived from the home, so every
    process finds it again)."""
    base = home
    if len(os.path.join(home, folder, "supervisor.sock")) > UNIX_PATH_MAX - 8:
        from services.ipc.naming import runtime_root
        digest = hashlib.sha256(os.path.abspath(home).encode()).hexdigest()[:16]
        base = private_folder(os.path.join(runtime_root(), f"home-{digest}"))
    for part in folder.split("/"):
        base = private_folder(os.path.join(base, part))
    return base


def _config_value(text: str) -> str:
    # supervisord expands %(name)s in values: a literal % is written %%.
    return text.replace("%", "%%")


@dataclass(frozen=True)
class Program:
    name: str                     # vcpu, devices, vrdp
    argv: list[str]
    autorestart: bool
    log_file: str
    startsecs: int = 0


def group_config(group: str, programs: list[Program], directory: str, environment: dict[str, str]) -> str:
    """The supervisord configuration of one VM group. Nothing autostarts: the manager starts the
    programs in order (devices need the vCPU's RAM region)."""
    env = ",".join(f'{key}="{_config_value(value)}"' for key, value in sorted(environment.items()))
    sections = [f"[group:{group}]", "programs=" + ",".join(f"{group}-{p.name}" for p in programs), ""]
    for program in programs:
        sections += [
            f"[program:{group}-{program.name}]",
            f"process_name={program.name}",
            f"command={_config_value(shlex.join(program.argv))}",
            f"directory={_config_value(directory)}",
            f"environment={env}",
            "autostart=false",
            f"autorestart={'true' if program.autorestart else 'false'}",
            f"startsecs={program.startsecs}",
            "startretries=1000" if program.autorestart else "startretries=0",
            "stopsignal=TERM",
            "stopwaitsecs=10",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_config_value(program.log_file)}",
            "stdout_logfile_maxbytes=10MB",
            "stdout_logfile_backups=1",
            "",
        ]
    return "\n".join(sections)


def own_config(home: str, socket_path: str) -> str:
    folder = os.path.join(home, "supervisor")
    return "\n".join([
        "; written by the Headbox manager; VM groups are included from groups/",
        "[unix_http_server]",
        f"file={_config_value(socket_path)}",
        "chmod=0600",
        "",
        "[supervisord]",
        f"logfile={_config_value(os.path.join(folder, 'supervisord.log'))}",
        f"pidfile={_config_value(os.path.join(folder, 'supervisord.pid'))}",
        f"childlogdir={_config_value(os.path.join(folder, 'logs'))}",
        "identifier=headbox",
        "nodaemon=false",
        "umask=077",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_config_value(socket_path)}",
        "",
        "[include]",
        f"files={_config_value(os.path.join(folder, 'groups', '*.conf'))}",
        "",
    ])


class Supervisor:
    """XML-RPC to one supervisord. `owned` is True when we started it (and may shut it down)."""

    def __init__(self, url: str, groups_dir: str, owned: bool):
        self.url = url
        self.groups_dir = groups_dir
        self.owned = owned
        self._lock = threading.Lock()    # ServerProxy is not thread-safe
        self._proxy = self._connect()

    def _connect(self):
        from supervisor.xmlrpc import SupervisorTransport
        transport = SupervisorTransport(None, None, self.url)
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport, allow_none=True)

    def call(self, method: str, *args):
        with self._lock:
            try:
                return getattr(self._proxy.supervisor, method)(*args)
            except xmlrpc.client.Fault as fault:
                raise SupervisorError(f"supervisord: {method}: {fault.faultString}") from None
            except OSError as error:
                self._proxy = self._connect()
                raise SupervisorError(f"supervisord at {self.url} does not answer: {error}") from None

    def alive(self) -> bool:
        try:
            return self.call("getState")["statename"] == "RUNNING"
        except SupervisorError:
            return False

    # -- groups --------------------------------------------------------------------------------
    def add_group(self, group: str, config: str) -> None:
        """Write the group's file into the include folder, reload, add the group (started by
        start_program)."""
        os.makedirs(self.groups_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.groups_dir, f"{group}.conf")
        write_private(path, config)
        self.call("reloadConfig")
        if group in self.groups():
            self._remove(group)
        self.call("addProcessGroup", group)

    def start_program(self, group: str, program: str) -> None:
        self.call("startProcess", f"{group}:{program}", False)

    def remove_group(self, group: str) -> None:
        """Stop every process of the group and forget it (the group's file too)."""
        try:
            os.unlink(os.path.join(self.groups_dir, f"{group}.conf"))
        except FileNotFoundError:
            pass
        if group in self.groups():
            self._remove(group)
        self.call("reloadConfig")

    def _remove(self, group: str) -> None:
        try:
            self.call("stopProcessGroup", group, True)
        except SupervisorError as error:
            log.warning("%s", error)
        self.call("removeProcessGroup", group)

    def processes(self) -> list[dict]:
        return self.call("getAllProcessInfo")

    def groups(self) -> set[str]:
        return {info["group"] for info in self.processes()}

    def shutdown(self) -> None:
        if self.owned:
            try:
                self.call("shutdown")
            except SupervisorError:
                pass


def _under_supervisord() -> str | None:
    if os.environ.get("SUPERVISOR_ENABLED") and os.environ.get("SUPERVISOR_SERVER_URL"):
        return os.environ["SUPERVISOR_SERVER_URL"]
    return None


def connect(home: str, start: bool = True, timeout: float = 15.0) -> Supervisor:
    """The supervisord we run under, else ours for `home` (started if `start` and not running)."""
    groups_dir = os.path.join(home, "supervisor", "groups")
    url = _under_supervisord()
    if url:
        supervisor = Supervisor(url, groups_dir, owned=False)
        if not supervisor.alive():
            raise SupervisorError(f"the supervisord we run under ({url}) does not answer")
        return supervisor
    folder = os.path.join(home, "supervisor")
    os.makedirs(os.path.join(folder, "logs"), mode=0o700, exist_ok=True)
    os.makedirs(groups_dir, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    socket_path = os.path.join(private_socket_dir(home, os.path.join("supervisor", "run")), "supervisor.sock")
    supervisor = Supervisor("unix://" + socket_path, groups_dir, owned=True)
    if supervisor.alive() or not start:
        return supervisor
    config_path = os.path.join(folder, "supervisord.conf")
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(own_config(home, socket_path))
    # supervisord forks into the background itself; its parent exits at once.
    subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", config_path],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   start_new_session=True, check=False, timeout=timeout)
    deadline = time.monotonic() + timeout
    while not supervisor.alive():
        if time.monotonic() > deadline:
            raise SupervisorError(f"supervisord did not start; see {os.path.join(folder, 'supervisord.log')}")
        time.sleep(0.05)
    log.info("started supervisord for %s (socket %s)", home, socket_path)
    return supervisor
