"""`VBoxManage`: VirtualBox's management command on the Headbox manager (started on demand).

One command is one control-API request; a mistake prints one `VBoxManage: error:` line and exits 1."""

from __future__ import annotations

import os
import sys

from services.manager.cli import arguments
from services.manager.cli import format as output
from services.manager.cli.progress import ProgressLine
from services.manager.errors import ManagerError

VERSION = "0.1.0"
PROG = "VBoxManage"
USAGE = """Usage: VBoxManage [-q|--nologo] [--version] <command> [<arguments>]

Commands: createvm, registervm, unregistervm, list, modifyvm, createhd, createmedium, storagectl,
storageattach, openmedium, closemedium, showvminfo, startvm, controlvm, setextradata, getextradata,
setproperty (see VirtualBox's manual, chapter "VBoxManage"; the manager runs per $VBOX_USER_HOME).
"""


def read_secret(path: str) -> str:
    """The first line of a password file, or of standard input for "stdin"."""
    try:
        if path == "stdin":
            return sys.stdin.readline().rstrip("\r\n")
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except OSError as exc:
        raise arguments.UsageError(f"cannot read the password file '{path}': {exc.strerror}") from None


def run(call: arguments.Call, client, out) -> None:
    """Send the request, follow its job if it starts one, print the answer as VirtualBox would."""
    result = client.request(call.op, **call.fields)
    if call.op == "startvm":    # after the request: an unknown VM is refused before this line
        out.write(f'Waiting for VM "{call.options["vm"]}" to power on...\n')
        out.flush()
    if isinstance(result, dict) and set(result) == {"job"} and call.op == "startvm":
        result = _follow_start(client, result["job"], call.options["vm"], out)
    elif isinstance(result, dict) and set(result) == {"job"}:
        result = _follow(client, result["job"], out, show_progress=True)
    if call.output == "createvm":
        out.write(output.createvm(result, call.options["register"]))
    elif call.output == "list":
        out.write(output.list_output(call.options["what"], result or [], call.options["long"]))
    elif call.output == "showvminfo":
        out.write(output.showvminfo(result, call.options["machinereadable"]))
    elif call.output == "createmedium":
        out.write(output.medium_created(result))
    elif call.output == "getextradata":
        out.write(output.extradata(result, call.options["enumerate"]))
    elif call.output == "startvm":
        out.write(f'VM "{call.options["vm"]}" has been successfully started.\n')


TELEPORT_FIRST, TELEPORT_SPAN = 70, 29     # where a teleport target's startvm job reports its wait


def _follow_start(client, job, vm: str, out):
    """startvm: a VM that is a teleport target says that it waits, then shows the teleport's
    progress, as VirtualBox's "Teleporting virtual machine" progress; other starts print nothing."""
    line = ProgressLine()
    waiting = bool((client.request("showvminfo", vm=vm).get("teleporter") or {}).get("enabled"))
    if waiting:
        out.write(f'VM "{vm}" is waiting to be teleported in (VBoxManage controlvm <source> teleport)...\n')
        out.flush()

    def on_progress(percent):
        if waiting and percent > TELEPORT_FIRST:
            out.write(line.advance(min(100, (percent - TELEPORT_FIRST) * 100 // TELEPORT_SPAN)))
            out.flush()
    try:
        result = client.wait_job(job, on_progress)
    except ManagerError:
        if waiting:
            out.write(line.fail())
        raise
    if waiting:
        out.write(line.finish())
    return result


def _follow(client, job, out, show_progress: bool):
    """Wait for a job; its progress line starts only once it advances, so a job refused at once
    (a file that exists) prints nothing but its error."""
    line = ProgressLine()

    def on_progress(percent):
        if show_progress and percent > 0:
            out.write(line.advance(percent))
            out.flush()
    try:
        result = client.wait_job(job, on_progress)
    except ManagerError:
        if show_progress:
            out.write(line.fail())
        raise
    if show_progress:
        out.write(line.finish())
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    while argv and argv[0] in ("-q", "--nologo", "-nologo"):
        argv.pop(0)    # VirtualBox 4 and later print no logo; the option stays accepted
    if argv and argv[0] in ("--version", "-version", "-v", "-V"):
        print(VERSION)
        return 0
    if not argv or argv[0] in ("help", "-h", "--help", "-?"):
        sys.stdout.write(USAGE)
        return 0 if argv else 1
    client = None
    try:
        call = arguments.parse(argv, os.getcwd(), read_secret)
        from services.manager.client import connect_or_start  # zmq and msgpack only
        client = connect_or_start()
        run(call, client, sys.stdout)
        sys.stdout.flush()
        return 0
    except (arguments.UsageError, ManagerError) as error:
        sys.stdout.flush()
        message = error.message if isinstance(error, ManagerError) else str(error)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    except Exception as error:    # a bug still gets one line, never a traceback
        print(f"{PROG}: error: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
