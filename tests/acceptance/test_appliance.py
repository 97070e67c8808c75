"""The appliance: appliance/run starts supervisord with the manager in the foreground; a VM the
manager starts shows up in `supervisorctl status` as its vm-<uuid> group; restarting the manager
program keeps the VM; poweroff removes the group; stopping supervisord stops everything."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from services.manager.client import ManagerClient, daemon_running
from tests.waiting import wait_for as wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def status(home):
    done = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c",
                           os.path.join(home, "appliance", "supervisord.conf"), "status"],
                          capture_output=True, text=True, check=False)
    return {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.strip()}


def test_vm_groups_run_under_the_appliance_supervisord(tmp_path, monkeypatch):
    home = str(tmp_path / "home")
    run = tempfile.mkdtemp(prefix="hb-", dir="/tmp")      # VM socket paths must stay short
    monkeypatch.setenv("XDG_RUNTIME_DIR", run)
    monkeypatch.setenv("VBOX_USER_HOME", home)
    appliance = subprocess.Popen([os.path.join(REPO, "appliance", "run"), "--home", home],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        wait_until(lambda: daemon_running(home), 30, "the manager under the appliance")
        client = ManagerClient(home=home, timeout_ms=60000)
        manager_pid = client.request("ping")["pid"]
        wait_until(lambda: status(home)["manager"][0] == "RUNNING", 15, "supervisord sees the manager up")
        assert status(home)["manager"][:3] == ["RUNNING", "pid", f"{manager_pid},"]
        assert oct(os.stat(os.path.join(home, "appliance", "supervisord.conf")).st_mode & 0o777) == "0o600"

        uuid = client.request("createvm", name="box", register=True)["uuid"]
        client.request("modifyvm", vm="box", changes={"memory": 32, "accel": "tcg"})
        client.wait_job(client.request("startvm", vm="box", type="headless")["job"])
        state = client.request("vmstate", vm="box")
        assert state["state"] == "Running"
        table = status(home)
        group = f"vm-{uuid}"
        assert table[f"{group}:vcpu"][:3] == ["RUNNING", "pid", f"{state['pid_vcpu']},"]
        assert table[f"{group}:devices"][0] == "RUNNING"
        wait_until(lambda: status(home)[f"{group}:vrdp"][0] == "RUNNING", 15, "vrdp running")
        # The manager used the appliance's supervisord, not one of its own.
        assert not os.path.exists(os.path.join(home, "supervisor", "supervisord.pid"))

        client.close()
        subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c",
                        os.path.join(home, "appliance", "supervisord.conf"), "restart", "manager"],
                       capture_output=True, check=True)
        client = ManagerClient(home=home, timeout_ms=60000)
        wait_until(lambda: client.request("ping")["pid"] != manager_pid, 30, "a new manager")
        assert client.request("vmstate", vm="box") == state

        client.request("controlvm", vm="box", action="poweroff")
        assert client.request("vmstate", vm="box")["state"] == "PoweredOff"
        assert not any(name.startswith(group) for name in status(home))
    finally:
        if client is not None:
            client.close()
        appliance.send_signal(signal.SIGTERM)
        appliance.wait(30)
        shutil.rmtree(run, ignore_errors=True)
    assert not daemon_running(home)
