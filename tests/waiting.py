"""What many tests need: a free loopback port, and waiting for a condition with a deadline while
the processes it depends on must stay alive."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check, timeout: float, what: str, processes=(), interval: float = 0.1):
    """check()'s first true result within timeout seconds; AssertionError naming `what` otherwise,
    or at once when one of `processes` (Popen objects, None ignored) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process is not None:
                assert process.poll() is None, f"{process.args[0]} exited with {process.returncode} ({what})"
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {what}")
