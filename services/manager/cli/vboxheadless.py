"""`VBoxHeadless --startvm <uuid|name> [--vrde on|off|config]` (also `VBoxVRDP`): one registered VM run in
the foreground with its RDP server, reported to the manager as a session; Ctrl-C or SIGTERM powers it off."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys

from services.ipc.spec import LaunchSpec
from services.ipc.vrde import VrdeConfig
from services.manager.cli.arguments import UsageError, scan
from services.manager.errors import INVALID_VM_STATE, IPRT_ERROR, ManagerError

VERSION = "0.1.0"
PROG = "VBoxHeadless"
BANNER = f"Headbox Headless Interface {VERSION}\n\n"
USAGE = """Usage:
   -s, -startvm, --startvm <name|uuid>   Start given VM (required argument)
   -v, -vrde, --vrde on|off|config       Enable or disable the VRDE server (default on),
                                         or don't change the setting (config)
   -e, -vrdeproperty, --vrdeproperty <name=[value]> Set a VRDE property (TCP/Ports, TCP/Address)
   -p, -vrdpport, --vrdpport <ports>     Same as -e "TCP/Ports=<ports>" (deprecated)
   -a, -vrdpaddress, --vrdpaddress <ip>  Same as -e "TCP/Address=<ip>" (deprecated)
"""
OPTIONS = {"--startvm": 1, "-s": 1, "--vrde": 1, "--vrdp": 1, "-v": 1, "--vrdeproperty": 1, "-e": 1,
           "--vrdpport": 1, "-p": 1, "--vrdpaddress": 1, "-a": 1, "--help": 0, "-h": 0, "--version": 0, "-V": 0}


class Stop(Exception):
    """SIGTERM, SIGHUP or Ctrl-C: power the VM off."""


def parse(argv: list[str]) -> dict:
    """{vm, vrde: on|off|config, properties: {name: value}, help, version}; UsageError on a mistake."""
    options, positionals = scan(argv, OPTIONS)
    if positionals:
        raise UsageError(f"Invalid parameter '{positionals[0]}'")
    parsed = {"vm": None, "vrde": "on", "properties": {}, "help": False, "version": False}
    for option, values in options:
        value = values[0] if values else None
        if option in ("--startvm", "-s"):
            parsed["vm"] = value
        elif option in ("--vrde", "--vrdp", "-v"):
            mode = {"on": "on", "enable": "on", "off": "off", "disable": "off", "config": "config"}.get(value.lower())
            if mode is None:
                raise UsageError(f"{option} requires an argument (on|off|config), not '{value}'")
            parsed["vrde"] = mode
        elif option in ("--vrdeproperty", "-e"):
            name, eq, rest = value.partition("=")
            if not eq or not name:
                raise UsageError(f"Invalid VRDE property '{value}'")
            parsed["properties"][name] = rest
        elif option in ("--vrdpport", "-p"):
            parsed["properties"]["TCP/Ports"] = value
        elif option in ("--vrdpaddress", "-a"):
            parsed["properties"]["TCP/Address"] = value
        elif option in ("--help", "-h"):
            parsed["help"] = True
        else:
            parsed["version"] = True
    if parsed["vm"] is None and not (parsed["help"] or parsed["version"]):
        raise UsageError("--startvm <name|uuid> is required")
    return parsed


def headless_vrde(vrde: VrdeConfig, mode: str, overrides: dict) -> VrdeConfig:
    """The VM's VRDE settings for this run: VBoxHeadless's `--vrde` (on by default: the headless
    server has no other output) and its `-e` properties (TCP/Ports and TCP/Address among them)."""
    properties = {**vrde.properties, **overrides}
    changed = dataclasses.replace(
        vrde, enabled=vrde.enabled if mode == "config" else mode == "on",
        ports=properties.pop("TCP/Ports", None) or vrde.ports,
        address=properties.pop("TCP/Address", None) or vrde.address, properties=properties)
    changed.validate()
    return changed


def _launch(client, vm: str, mode: str, overrides: dict):
    """The launch spec for this run, from the manager's settings and the command line."""
    info = client.request("showvminfo", vm=vm)
    spec = LaunchSpec(**client.request("launchspec", vm=vm))
    spec.vrde = headless_vrde(spec.vrde, mode, overrides)
    return info, spec


def _on_signal(signum, frame):
    raise Stop()


def run(parsed: dict, out) -> int:
    from services.manager.cli.foreground import ForegroundVm
    from services.manager.client import connect_or_start

    client = connect_or_start()
    vm = None
    session = None
    try:
        info, spec = _launch(client, parsed["vm"], parsed["vrde"], parsed["properties"])
        state = client.request("vmstate", vm=info["uuid"])
        if state.get("state") in ("Running", "Paused", "Starting", "Stopping", "Teleporting", "TeleportingIn"):
            raise ManagerError(INVALID_VM_STATE, f"The machine '{info['name']}' is already running")
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, _on_signal)
        vm = ForegroundVm(spec)
        vm.start()
        port = vm.vrde_port()
        client.request("session", vm=info["uuid"], action="open", pid=os.getpid(), vrde_port_bound=port)
        session = info["uuid"]
        if port is None:
            out.write("VRDE server is inactive.\n")
        elif port:
            out.write(f"VRDE server is listening on port {port}.\n")
        else:
            out.write("VRDE server failed to start.\n")
        out.flush()
        code = vm.wait()
        return 0 if code == 0 else 1
    except Stop:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)     # a second Ctrl-C must not cut the power-off short
        if vm is not None:
            vm.power_off()
        return 0
    except BaseException as error:
        if vm is not None:
            vm.kill()       # nothing of a failed run is left behind (the session was refused, ...)
        if isinstance(error, RuntimeError):     # a process failed to start: its one-line reason
            raise ManagerError(IPRT_ERROR, f"failed to start machine: {error}") from None
        raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        if session is not None:
            try:
                client.request("session", vm=session, action="close", pid=os.getpid())
            except ManagerError:
                pass
        client.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parsed = parse(argv)
        if parsed["version"]:
            print(VERSION)
            return 0
        sys.stdout.write(BANNER)
        if parsed["help"]:
            sys.stdout.write(USAGE)
            return 0
        sys.stdout.flush()
        return run(parsed, sys.stdout)
    except (UsageError, ManagerError) as error:
        message = error.message if isinstance(error, ManagerError) else str(error)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    except Exception as error:     # a bug still gets one line, never a traceback
        print(f"{PROG}: error: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
