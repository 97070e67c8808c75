"""Issue 11, defect 1: a runtime folder another user made (to swap a VM's launch spec and have the
root-run RDP server load their authentication library) is refused by every VM process and by
VBoxManage startvm, with one clear error line and nothing started."""

import shutil
import subprocess
import uuid

import pytest

from services.ipc.spec import LaunchSpec
from services.ipc.vrde import VrdeConfig
from tests.support import vm_processes
from tests.support.vboxmanage import Cli
from tests.waiting import free_port


def taken_over(base, host_user):
    """base/headbox, the runtime root for XDG_RUNTIME_DIR=base, made by the other user."""
    root = base / "headbox"
    root.mkdir(parents=True)
    shutil.chown(root, user=host_user)
    return root


@pytest.mark.parametrize("program", ["vcpu", "devices", "vrdp", "teleport"])
def test_each_vm_process_refuses_a_runtime_root_of_another_user(program, tmp_path, host_user):
    taken_over(tmp_path / "run", host_user)
    vm_id = "pf" + uuid.uuid4().hex[:6]
    spec = LaunchSpec(vm_id, memory_mib=16, accel="tcg",
                      vrde=VrdeConfig.listening(free_port(), vm_id, auth_type="external",
                                                auth_library=str(tmp_path / "evil.py")))
    process = vm_processes.start(program, spec, tmp_path / "specs", env={"XDG_RUNTIME_DIR": str(tmp_path / "run"),
                                                                          "PATH": "/usr/bin:/bin"},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=30)
    assert process.returncode != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "belongs to uid" in lines[0], err
    assert "XDG_RUNTIME_DIR" in lines[0]


def test_startvm_refuses_a_runtime_root_of_another_user(host_user):
    cli = Cli()
    try:
        cli("createvm", "--name", "victim", "--register")
        taken_over(cli.root / "run", host_user)
        done = cli.run("startvm", "victim", "--type", "headless")
        assert done.returncode == 1, done
        assert "belongs to uid" in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert "victim" in cli("list", "vms") and "victim" not in cli("list", "runningvms")
    finally:
        shutil.rmtree(cli.root / "run" / "headbox", ignore_errors=True)
        cli.close()
