"""The RDP server's process on its own, without a VM, for its integration tests."""

import os
import socket
import subprocess
import uuid

from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.naming import endpoint
from services.ipc.spec import LaunchSpec
from services.ipc.vrde import VrdeConfig
from tests.support.rdp_test_client import Closed, RdpClient  # noqa: F401
from tests.support.vm_processes import start
from tests.waiting import wait_for


def taken_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


class VrdpProcess:
    """The RDP server of a VM without a VM, told by a launch spec, its log in a file."""

    def __init__(self, tmp_path, **fields):
        self.tmp_path = tmp_path
        self.vm_id = "vrdp" + uuid.uuid4().hex[:6]
        fields.setdefault("state_dir", str(tmp_path / "state"))
        self.log_path = tmp_path / f"vrdp-{self.vm_id}.log"
        self.config = VrdeConfig(vm_name="test", vm_uuid=str(uuid.uuid4()), enabled=True, address="127.0.0.1",
                                 **fields)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
        self.log_file = self.log_path.open("w")
        self.process = start("vrdp", LaunchSpec(self.vm_id, vrde=self.config), tmp_path, env=self.env,
                             stdout=self.log_file, stderr=self.log_file)
        self.control_endpoint = endpoint(self.vm_id, "control-vrdp")
        wait_for(lambda: os.path.exists(self.control_endpoint[len("ipc://"):]), 20, "control socket",
                 [self.process])

    def call(self, message) -> dict:
        client = ControlClient(self.control_endpoint, timeout_ms=5000)
        try:
            return client.call(message)
        finally:
            client.close()

    def status(self):
        return self.call(ops.Status())

    def update(self, **changes):
        """New settings, applied before this returns (as modifyvm's)."""
        for name, value in changes.items():
            setattr(self.config, name, value)
        self.call(ops.Configure(config=self.config.to_dict()))

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
