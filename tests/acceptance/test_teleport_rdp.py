"""RDP clients and teleporting (issue 6): an xfreerdp session on the source VM ends at the switch, and
a new xfreerdp connects to the VM on the target (same machine, each VM with its own RDP server)."""

from __future__ import annotations

import time

import pytest

from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.naming import endpoint
from services.teleport.hardware import hardware_config
from services.teleport.source import teleport_out
from tests.support.rdp_clients import Client, Display, free_port, require, wait_for
from tests.support.teleport_vms import (
    Target,
    Vm,
    counter_firmware,
    wait_lines,
)


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    return counter_firmware(tmp_path_factory.mktemp("teleport-rdp"))


@pytest.fixture
def display(tmp_path):
    require("Xvfb", "xfreerdp", "xdotool")
    screen = Display(tmp_path)
    yield screen
    screen.close()


def rdp_clients(vm: Vm) -> list:
    control = ControlClient(endpoint(vm.spec.vm_id, "control-vrdp"), timeout_ms=3000)
    try:
        return control.call(ops.Status()).get("clients", [])
    finally:
        control.close()


def connect(display, port: int, tmp_path, name: str) -> Client:
    argv = ["xfreerdp", f"/v:127.0.0.1:{port}", "/cert:ignore", "/u:tester", "/p:secret", "/sec:tls",
            "/size:720x400", "-clipboard"]
    return Client(display, argv, tmp_path / f"{name}.log", "FreeRDP")


def test_rdp_clients_leave_with_the_source_and_connect_to_the_target(firmware, display, tmp_path):
    source = Vm(firmware, tmp_path, rdp_port=free_port())
    target_vm = Vm(firmware, tmp_path, incoming=True, rdp_port=free_port())
    first = second = None
    try:
        wait_lines(source.log, 5)
        first = connect(display, source.rdp_port, tmp_path, "before")
        first.wait_window()
        wait_for(lambda: rdp_clients(source), 30, "the client logged on to the source", [first.process])
        target = Target(target_vm)
        teleport_out(source.spec.vm_id, hardware_config(source.spec), "127.0.0.1", target.port)
        target.thread.join(30)
        assert target.error is None and target.result.resumed
        # The source's RDP server goes with its VM: its client is disconnected.
        wait_for(lambda: first.process.poll() is not None, 30, "the source's client to be disconnected")
        second = connect(display, target_vm.rdp_port, tmp_path, "after")
        second.wait_window()
        wait_for(lambda: rdp_clients(target_vm), 30, "a client logged on to the target", [second.process])
        time.sleep(1)
        assert second.process.poll() is None, second.text()[-2000:]
    finally:
        for client in (first, second):
            if client is not None:
                client.close()
        source.close()
        target_vm.close()
