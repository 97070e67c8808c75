"""One of a VM's processes started on its own by a test, told by a launch spec as the manager's are."""

from __future__ import annotations

import os
import subprocess
import sys

from services.ipc.spec import LaunchSpec, process_argv


def process_argv_for(program: str, spec: LaunchSpec, folder) -> list[str]:
    """`spec` saved (0600) as `folder`/spec-<program>, and the command line that loads it."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return process_argv(program, spec.save(f"{folder}/spec-{program}"), sys.executable)


def start(program: str, spec: LaunchSpec, folder, **popen) -> subprocess.Popen:
    return subprocess.Popen(process_argv_for(program, spec, folder), **popen)
