"""User mistakes with VBoxManage (no guest boots): each gives one `VBoxManage: error:` line, exit code 1,
and leaves every settings file byte for byte as it was."""

from __future__ import annotations

import pytest

from tests.support.vboxmanage import Cli


@pytest.fixture(scope="module")
def cli():
    home = Cli()
    try:
        home("createvm", "--name", "vm", "--ostype", "Debian", "--register")
        home("createvm", "--name", "other", "--register")
        home("storagectl", "vm", "--name", "IDE Controller", "--add", "ide", "--controller", "PIIX4")
        home("storagectl", "other", "--name", "IDE", "--add", "ide")
        home("createhd", "--filename", "disk.vdi", "--size", "8")
        home("storageattach", "vm", "--storagectl", "IDE Controller", "--port", "0", "--device", "0",
             "--type", "hdd", "--medium", "disk.vdi")
        yield home
    finally:
        home.close()


MISTAKES = {
    "unknown VM (showvminfo)": (("showvminfo", "no such vm"), "no such vm"),
    "unknown VM (modifyvm)": (("modifyvm", "no such vm", "--memory", "128"), "no such vm"),
    "unknown VM (startvm)": (("startvm", "no such vm", "--type", "headless"), "no such vm"),
    "duplicate name": (("createvm", "--name", "vm", "--register"), "vm"),
    "unknown OS type": (("createvm", "--name", "new", "--ostype", "Plan9000", "--register"), "Plan9000"),
    "bad flag value": (("modifyvm", "vm", "--acpi", "maybe"), "--acpi"),
    "bad value among good ones (manager)": (("modifyvm", "vm", "--cpus", "2", "--memory", "999999999"), None),
    "unknown flag": (("modifyvm", "vm", "--turbo", "on"), "--turbo"),
    "several flags, one bad": (("modifyvm", "vm", "--cpus", "2", "--boot1", "cdrom"), "--boot1"),
    "missing medium file": (("storageattach", "vm", "--storagectl", "IDE Controller", "--port", "1",
                             "--device", "0", "--type", "dvddrive", "--medium", "missing.iso"), "missing.iso"),
    "missing medium file (openmedium)": (("openmedium", "dvd", "/nonexistent/x.iso"), "x.iso"),
    "medium attached twice": (("storageattach", "other", "--storagectl", "IDE", "--port", "0", "--device", "0",
                               "--type", "hdd", "--medium", "disk.vdi"), None),
    "unknown controller": (("storageattach", "vm", "--storagectl", "SCSI", "--port", "0", "--device", "1",
                            "--type", "hdd", "--medium", "disk.vdi"), "SCSI"),
    "closing a medium in use": (("closemedium", "disk", "disk.vdi"), None),
    "existing medium file": (("createhd", "--filename", "disk.vdi", "--size", "8"), "disk.vdi"),
    "gui on a headless server": (("startvm", "vm", "--type", "gui"), "--type headless"),
    "unknown command": (("frobnicate", "vm"), "frobnicate"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistake_is_one_line_and_changes_nothing(cli, mistake):
    argv, mentioned = MISTAKES[mistake]
    before = cli.settings_files()
    assert before, "no settings files found under the home"
    message = cli.fails(*argv)
    if mentioned:
        assert mentioned in message
    assert cli.settings_files() == before
    assert cli("list", "vms").count("\n") == 2


def test_nothing_changed_after_all_mistakes(cli):
    info = cli.showvminfo("vm")
    assert info["acpi"] == "on" and info["cpus"] == "1" and info["boot1"] != "disk"
    assert info['IDE Controller-0-0'].endswith("/disk.vdi")
    assert "IDE-0-0" not in cli.showvminfo("other")


def vboxheadless(cli: Cli, *args: str):
    import subprocess
    return subprocess.run([cli.vboxheadless, *args], cwd=cli.work, env=cli.env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_vboxheadless_early_errors_are_one_line(cli):
    done = vboxheadless(cli, "--startvm", "no such vm")
    assert done.returncode == 1 and done.stdout.startswith("Headbox Headless Interface 0.1.0\n")
    assert done.stderr.splitlines() == ["VBoxHeadless: error: Could not find a registered machine named 'no such vm'"]
    cli("createvm", "--name", "lost", "--register")
    cli("storagectl", "lost", "--name", "IDE", "--add", "ide")
    cli("createhd", "--filename", "lost.vdi", "--size", "8")
    cli("storageattach", "lost", "--storagectl", "IDE", "--port", "0", "--device", "0", "--type", "hdd",
        "--medium", "lost.vdi")
    cli("modifyvm", "lost", "--boot1", "disk")
    (cli.work / "lost.vdi").unlink()
    before = cli.settings_files()
    done = vboxheadless(cli, "--startvm", "lost")
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("VBoxHeadless: error: "), done.stderr
    assert str(cli.work / "lost.vdi") in lines[0]
    assert cli.showvminfo("lost")["VMState"] == "poweroff" and cli("list", "runningvms") == ""
    assert cli.settings_files() == before
    done = vboxheadless(cli, "--startvm", "lost", "--vrde", "sometimes")
    assert done.returncode == 1
    assert done.stderr == "VBoxHeadless: error: --vrde requires an argument (on|off|config), not 'sometimes'\n"
