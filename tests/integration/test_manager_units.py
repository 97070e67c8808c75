"""The manager's small parts: what supervisor's process states mean for a VM, keyboardputscancode's
bytes, the supervisord configuration written for a VM group, when an on-demand manager idles out,
the authorized_keys file."""

import argparse
import configparser
import shlex

import pytest

from services.manager.__main__ import idle_exit_seconds
from services.manager.curve import authorize, authorized_keys
from services.manager.errors import E_INVALIDARG, ManagerError
from services.manager.groups import verdict
from services.manager.supervision import Program, group_config, own_config
from services.manager.vmcontrol import keyboard_events


def info(state, exitstatus=0, spawnerr=""):
    return {"statename": state, "exitstatus": exitstatus, "spawnerr": spawnerr}


def test_verdict_of_supervisor_states():
    running = {"vcpu": info("RUNNING"), "devices": info("RUNNING"), "vrdp": info("BACKOFF")}
    assert verdict(running) is None      # vrdp's restarts are supervisor's business
    assert verdict({**running, "vcpu": info("EXITED", 0)}) == ("PoweredOff", "the guest powered off")
    assert verdict({**running, "vcpu": info("EXITED", -1)}) == \
        ("Aborted", "the vCPU process died (killed by a signal)")
    assert verdict({**running, "vcpu": info("EXITED", 2)}) == ("Aborted", "the vCPU process died (exit code 2)")
    assert verdict({**running, "vcpu": info("FATAL", spawnerr="can't find command")}) == \
        ("Aborted", "the vCPU process died (fatal: can't find command)")
    assert verdict({**running, "devices": info("EXITED", 1)}) == \
        ("Aborted", "the device process died (exit code 1)")
    assert verdict({}) == ("Aborted", "its vCPU process is gone from supervisor")


def test_keyboardputscancode_bytes():
    assert keyboard_events(["1e", "9e"]) == [[0x1E, False, True], [0x1E, False, False]]
    assert keyboard_events(["e0", "48", "e0", "c8"]) == [[0x48, True, True], [0x48, True, False]]
    for bad in (["zz"], ["100"], [], ["e0"]):
        with pytest.raises(ManagerError) as error:
            keyboard_events(bad)
        assert error.value.code == E_INVALIDARG


def test_group_config_is_one_group_of_three_programs_nothing_autostarts():
    programs = [Program("vcpu", ["/usr/bin/python3", "-m", "services.vcpu", "--vm-id", "u"], False, "/l/vcpu.log"),
                Program("devices", ["/usr/bin/python3", "-m", "services.devices", "--drive", "1:0:dvd:/a b/c%d.iso"],
                        False, "/l/devices.log"),
                Program("vrdp", ["/usr/bin/python3", "-m", "services.vrdp"], True, "/l/vrdp.log", startsecs=1)]
    text = group_config("vm-u", programs, "/repo", {"PYTHONPATH": "/repo", "HOME": "/h%x"})
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    assert parser.get("group:vm-u", "programs") == "vm-u-vcpu,vm-u-devices,vm-u-vrdp"
    for program in programs:
        section = f"program:vm-u-{program.name}"
        assert parser.get(section, "process_name") == program.name
        assert parser.get(section, "autostart") == "false"
        assert parser.get(section, "autorestart") == ("true" if program.name == "vrdp" else "false")
        # supervisord expands %(...)s: a literal % is doubled; the command splits back into argv.
        assert shlex.split(parser.get(section, "command").replace("%%", "%")) == program.argv
    assert 'HOME="/h%%x"' in parser.get("program:vm-u-vcpu", "environment")


def test_own_supervisord_config_keeps_its_socket_private():
    parser = configparser.RawConfigParser()
    parser.read_string(own_config("/home/h", "/home/h/supervisor/run/supervisor.sock"))
    assert parser.get("unix_http_server", "chmod") == "0600"
    assert parser.get("supervisord", "nodaemon") == "false"      # outlives the manager
    assert parser.get("include", "files") == "/home/h/supervisor/groups/*.conf"


def test_idle_exit_rules(monkeypatch):
    def args(**kw):
        return argparse.Namespace(**{"idle_exit": None, "foreground": False, **kw})
    monkeypatch.delenv("SUPERVISOR_ENABLED", raising=False)
    monkeypatch.delenv("HEADBOX_IDLE_EXIT", raising=False)
    assert idle_exit_seconds(args()) == 30
    assert idle_exit_seconds(args(foreground=True)) is None
    assert idle_exit_seconds(args(foreground=True, idle_exit=5)) == 5
    assert idle_exit_seconds(args(idle_exit=0)) is None
    monkeypatch.setenv("HEADBOX_IDLE_EXIT", "7")
    assert idle_exit_seconds(args()) == 7
    monkeypatch.setenv("SUPERVISOR_ENABLED", "1")
    assert idle_exit_seconds(args()) is None


def test_authorized_keys_take_z85_keys_with_hash_signs(tmp_path):
    home = str(tmp_path)
    key = b"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"     # '#' and '%' are Z85 digits too
    hashed = b"Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
    authorize(home, key)
    authorize(home, hashed.replace(b"$", b"#"))
    with open(tmp_path / "curve" / "authorized_keys", "a") as file:
        file.write("# a comment\n\n" + "0" * 40 + "  laptop of bob\n")
    assert authorized_keys(home) == {key, hashed.replace(b"$", b"#"), b"0" * 40}
    assert oct((tmp_path / "curve" / "authorized_keys").stat().st_mode & 0o777) == "0o600"
