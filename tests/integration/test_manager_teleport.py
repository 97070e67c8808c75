"""Teleporting through the manager on one host: a teleporter-enabled VM's startvm waits
(TeleportingIn) for `controlvm teleport` of another VM, then runs while the source powers off; a wrong
password fails the source's job and both carry on; poweroff ends a wait. SeaBIOS-only VMs on tcg."""

import shutil
import tempfile

import pytest

from services.manager.client import connect_or_start, daemon_running
from services.manager.errors import IPRT_ERROR, ManagerError
from tests.waiting import free_port
from tests.waiting import wait_for as wait_until


@pytest.fixture
def manager(tmp_path, monkeypatch):
    run = tempfile.mkdtemp(prefix="hb-", dir="/tmp")     # VM socket paths must stay short
    home = str(tmp_path / "home")
    monkeypatch.setenv("VBOX_USER_HOME", home)
    monkeypatch.setenv("XDG_RUNTIME_DIR", run)
    monkeypatch.setenv("HEADBOX_IDLE_EXIT", "600")
    client = connect_or_start(home)
    try:
        yield client
    finally:
        for row in client.request("list", what="runningvms"):
            try:
                client.request("controlvm", vm=row["uuid"], action="poweroff")
            except ManagerError:
                pass
        client.request("shutdown")
        wait_until(lambda: not daemon_running(home), 20, "the manager exits")
        client.close()
        shutil.rmtree(run, ignore_errors=True)


def make_vm(client, name, **changes):
    client.request("createvm", name=name, register=True)
    client.request("modifyvm", vm=name, changes={"memory": 32, "accel": "tcg", **changes})


def state(client, name):
    return client.request("vmstate", vm=name)["state"]


def test_a_wrong_password_fails_the_source_job_and_poweroff_ends_the_wait(manager):
    port = free_port()
    make_vm(manager, "src")
    make_vm(manager, "dst", teleporter=True, teleporter_port=port, teleporter_address="127.0.0.1",
            teleporter_password="s3cret")
    manager.wait_job(manager.request("startvm", vm="src", type="headless")["job"])
    incoming = manager.request("startvm", vm="dst", type="headless")["job"]
    wait_until(lambda: state(manager, "dst") == "TeleportingIn", 60, "the target waits")
    wrong = manager.request("controlvm", vm="src", action="teleport",
                            args={"host": "127.0.0.1", "port": port, "password": "wrong"})["job"]
    with pytest.raises(ManagerError) as error:
        manager.wait_job(wrong)
    assert error.value.code == IPRT_ERROR
    assert state(manager, "src") == "Running" and state(manager, "dst") == "TeleportingIn"
    with pytest.raises(ManagerError) as error:
        manager.request("controlvm", vm="src", action="teleport", args={"host": "127.0.0.1"})
    assert error.value.code == "E_INVALIDARG"
    manager.request("controlvm", vm="dst", action="poweroff")
    assert state(manager, "dst") == "PoweredOff"
    assert [row["name"] for row in manager.request("list", what="runningvms")] == ["src"]
    # The wait ends with the power-off: the listener closes and startvm's job reports why.
    wait_until(lambda: manager.request("job", job=incoming)["done"], 10, "the waiting startvm ends")
    assert "canceled" in manager.request("job", job=incoming)["error"]["message"]


def test_teleport_between_two_vms_of_one_manager(manager):
    port = free_port()
    make_vm(manager, "src")
    make_vm(manager, "dst", teleporter=True, teleporter_port=port, teleporter_address="127.0.0.1",
            teleporter_password="s3cret")
    manager.wait_job(manager.request("startvm", vm="src", type="headless")["job"])
    incoming = manager.request("startvm", vm="dst", type="headless")["job"]
    wait_until(lambda: state(manager, "dst") == "TeleportingIn", 60, "the target waits")

    wrong = manager.request("controlvm", vm="src", action="teleport",
                            args={"host": "127.0.0.1", "port": port, "password": "wrong"})["job"]
    with pytest.raises(ManagerError) as error:
        manager.wait_job(wrong)
    assert error.value.code == IPRT_ERROR
    assert state(manager, "src") == "Running" and state(manager, "dst") == "TeleportingIn"

    moved = manager.request("controlvm", vm="src", action="teleport",
                            args={"host": "127.0.0.1", "port": port, "password": "s3cret"})["job"]
    figures = manager.wait_job(moved)
    assert figures["bytes_sent"] > 0
    manager.wait_job(incoming)
    assert state(manager, "dst") == "Running"
    wait_until(lambda: state(manager, "src") == "PoweredOff", 15, "the source powers off")
    assert manager.request("list", what="runningvms") == [{"name": "dst", "uuid": manager.request(
        "showvminfo", vm="dst")["uuid"]}]
    manager.request("controlvm", vm="dst", action="poweroff")
    assert state(manager, "dst") == "PoweredOff"
