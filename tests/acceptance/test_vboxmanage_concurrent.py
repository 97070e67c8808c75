"""Twenty VBoxManage processes changing one VM at once (modifyvm and setextradata): every change takes
effect, and the VM's .vbox file is still well-formed XML."""

from __future__ import annotations

import subprocess
from xml.etree import ElementTree

from tests.support.vboxmanage import Cli

NIC_TYPES = ("nat", "null", "intnet", "hostonly", "bridged", "nat", "intnet", "null")


def test_twenty_concurrent_changes_all_take_effect(cli: Cli):
    created = cli("createvm", "--name", "busy", "--ostype", "Debian_64", "--register")
    settings_file = created.splitlines()[2].split("'")[1]
    commands = [("modifyvm", "busy", f"--nic{slot}", NIC_TYPES[slot - 1]) for slot in range(1, 9)]
    commands += [("modifyvm", "busy", "--memory", "320"), ("modifyvm", "busy", "--cpus", "2")]
    commands += [("setextradata", "busy", f"Test/Key{n}", f"value {n}") for n in range(10)]
    assert len(commands) == 20
    processes = [subprocess.Popen([cli.vboxmanage, *argv], cwd=cli.work, env=cli.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for argv in commands]
    for argv, process in zip(commands, processes):
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"{argv}: {err}"
    info = cli.showvminfo("busy")
    assert [info[f"nic{slot}"] for slot in range(1, 9)] == list(NIC_TYPES)
    assert (info["memory"], info["cpus"]) == ("320", "2")
    extradata = cli("getextradata", "busy", "enumerate")
    for n in range(10):
        assert f"Key: Test/Key{n}, Value: value {n}\n" in extradata
    ElementTree.parse(settings_file)
