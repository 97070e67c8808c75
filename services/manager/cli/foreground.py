"""A VM's processes run in the foreground for VBoxHeadless, from the launch spec the manager's runs
use: the RDP server's bound port read from its `status`, and a clean power-off on request."""

from __future__ import annotations

import time

from services.headless import VmProcesses
from services.ipc import ops
from services.ipc.control import call
from services.ipc.naming import endpoint


class ForegroundVm(VmProcesses):
    def _request(self, process: str, message, timeout_ms: int) -> dict:
        return call(endpoint(self.spec.vm_id, f"control-{process}"), message, timeout_ms)

    def vrde_port(self, timeout_s: float = 15.0) -> int | None:
        """The port the RDP server bound (0: none of the configured ports was free); None without one."""
        if self.vrdp is None:
            return None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.vrdp.poll() is None:
            try:
                status = self._request("vrdp", ops.Status(), 300)
            except Exception:      # zmq.Again until the server has bound its control socket
                time.sleep(0.1)
                continue
            if status.get("pid") == self.vrdp.pid:
                return int(status.get("port") or 0)
            time.sleep(0.1)
        return 0

