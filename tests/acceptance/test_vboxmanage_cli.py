"""The installed VBoxManage command as a user runs it: a temp VBOX_USER_HOME, the manager started on
demand (tests/support/vboxmanage.py)."""

from __future__ import annotations

import os
import subprocess

from services.manager.client import daemon_running
from tests.support.vboxmanage import installed


def test_version_and_usage_need_no_manager(cli):
    assert cli("--version").strip() == "0.1.0"
    assert cli("-q", "--version").strip() == "0.1.0"
    for alias in ("VBoxHeadless", "VBoxVRDP"):
        done = subprocess.run([installed(alias), "--version"], capture_output=True, text=True, check=False)
        assert (done.returncode, done.stdout) == (0, "0.1.0\n")
    done = cli.run()
    assert done.returncode == 1 and done.stdout.startswith("Usage: VBoxManage")
    assert not daemon_running(str(cli.home))


def test_first_command_starts_the_manager_and_prints_no_logo(cli):
    assert cli("list", "vms") == ""
    assert daemon_running(str(cli.home))
    out = cli("createvm", "--name", "first", "--register")
    lines = out.splitlines()
    assert lines[0] == "Virtual machine 'first' is created and registered."
    assert lines[1].startswith("UUID: ")
    uuid = lines[1][len("UUID: "):]
    assert cli("list", "vms") == f'"first" {{{uuid}}}\n'
    assert "ID:          WindowsXP\n" in cli("list", "ostypes")


def test_createhd_progress_and_relative_filename(cli):
    out = cli("createhd", "--filename", "disk", "--size", "16")
    assert out.splitlines()[0] == "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%"
    assert out.splitlines()[1].startswith("Medium created. UUID: ")
    assert (cli.work / "disk.vdi").is_file()      # made absolute against the caller's cwd, .vdi appended
    out = cli("createmedium", "disk", "--filename", "fixed.vdi", "--size", "4", "--variant", "Fixed", "--format", "VDI")
    assert out.splitlines()[1].startswith("Medium created. UUID: ")
    assert (cli.work / "fixed.vdi").stat().st_size >= 4 * 1024 * 1024      # Fixed: every block allocated


def test_extradata_and_properties(cli):
    cli("createvm", "--name", "vm", "--register")
    assert cli("getextradata", "vm", "Some/Key") == "No value set!\n"
    cli("setextradata", "vm", "Some/Key", "a value")
    cli("setextradata", "global", "Other/Key", "1")
    assert cli("getextradata", "vm", "Some/Key") == "Value: a value\n"
    assert "Key: Some/Key, Value: a value\n" in cli("getextradata", "vm", "enumerate")
    assert cli("getextradata", "global", "Other/Key") == "Value: 1\n"
    cli("setextradata", "vm", "Some/Key")
    assert cli("getextradata", "vm", "Some/Key") == "No value set!\n"
    cli("setproperty", "vrdpauthlibrary", "VBoxAuthSimple")
    assert "VBoxAuthSimple" in cli("list", "systemproperties")
    cli("setproperty", "machinefolder", "machines")
    assert f"Default machine folder:           {cli.work / 'machines'}\n" in cli("list", "systemproperties")
    created = cli("createvm", "--name", "placed", "--register")
    assert f"Settings file: '{cli.work / 'machines'}/" in created


def test_modifyvm_shows_in_showvminfo(cli):
    cli("createvm", "--name", "vm", "--ostype", "Debian_64", "--register")
    cli("modifyvm", "vm", "--memory", "300", "--cpus", "2", "--boot1", "disk", "--boot2", "none", "--nic2", "intnet",
        "--vrdp", "on", "--vrdpport", "5000,5010-5012", "--vrdeproperty", "Security/Method=TLS",
        "--uart1", "0x3F8", "4", "--uartmode1", "file", "com1.log", "--cpuid", "1", "0", "0", "0", "0",
        "--teleporter", "on", "--teleporterport", "6000", "--teleporterpassword", "Tel3porter-Secret")
    info = cli.showvminfo("vm")
    assert (info["memory"], info["cpus"], info["boot1"], info["boot2"], info["nic2"]) == \
        ("300", "2", "disk", "none", "intnet")
    assert (info["vrde"], info["vrdeports"], info["vrdeport"]) == ("on", "5000,5010-5012", "-1")
    assert info["vrdeproperty[Security/Method]"] == "TLS"
    assert info["uart1"] == "0x03f8,4" and info["uartmode1"] == f"file,{cli.work / 'com1.log'}"
    assert info["teleporterenabled"] == "on" and info["teleporterport"] == "6000"
    human = cli("showvminfo", "vm")
    assert "Memory size:                 300MB\n" in human
    assert "VRDE:                        enabled (Address 0.0.0.0, Ports 5000,5010-5012," in human
    assert b"Tel3porter-Secret" not in b"".join(cli.settings_files().values())    # stored hashed


def test_register_unregister_and_media(cli):
    created = cli("createvm", "--name", "loose", "--basefolder", "vms")
    assert created.startswith("Virtual machine 'loose' is created.\n")
    settings_file = created.splitlines()[2].split("'")[1]
    assert settings_file.startswith(str(cli.work / "vms"))
    assert cli("list", "vms") == ""
    cli("registervm", os.path.relpath(settings_file, cli.work))
    assert '"loose"' in cli("list", "vms")
    cli("createhd", "--filename", "scratch.vdi", "--size", "8")
    cli("closemedium", "disk", "scratch.vdi")
    assert "scratch.vdi" not in cli("list", "hdds") and (cli.work / "scratch.vdi").exists()
    cli("openmedium", "disk", "scratch.vdi")
    assert str(cli.work / "scratch.vdi") in cli("list", "hdds")
    cli("closemedium", "disk", "scratch.vdi", "--delete")
    assert not (cli.work / "scratch.vdi").exists()
    cli("unregistervm", "loose", "--delete")
    assert cli("list", "vms") == "" and not os.path.exists(settings_file)
