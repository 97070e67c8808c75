"""VBoxManage's argv -> control-API request mapping, its progress line and its output layouts
(showvminfo, list, extradata) fed with contract-shaped answers (docs/control-api.md)."""

import dataclasses

import pytest

from services.manager.cli import format as output
from services.manager.cli.arguments import UsageError, parse
from services.manager.cli.progress import ProgressLine

CWD = "/home/user/vms"


def no_secret(path):
    raise AssertionError("no password file expected")


def call(*argv, read_secret=no_secret):
    return parse(list(argv), CWD, read_secret)


def error(*argv):
    with pytest.raises(UsageError) as caught:
        call(*argv)
    return str(caught.value)


# ------------------------------------------------------------------------------------------------
# The spec's step-by-step commands (user_Frontends.xml, "creating a virtual machine on a headless server")

def test_spec_createvm():
    c = call("createvm", "--name", "Windows XP", "--ostype", "WindowsXP", "--register")
    assert (c.op, c.fields) == ("createvm", {"name": "Windows XP", "ostype": "WindowsXP", "register": True})


def test_spec_modifyvm_several_flags_in_one_request():
    c = call("modifyvm", "Windows XP", "--memory", "256", "--acpi", "on", "--boot1", "dvd", "--nic1", "nat")
    assert c.op == "modifyvm"
    assert c.fields == {"vm": "Windows XP", "changes": {"memory": 256, "acpi": True, "boot1": "dvd", "nic1": "nat"}}


def test_spec_createhd_relative_name_is_absolute_against_cwd():
    c = call("createhd", "--filename", "WinXP.vdi", "--size", "10000", "--remember")
    assert c.op == "createmedium" and c.output == "createmedium"
    assert c.fields == {"kind": "disk", "filename": "/home/user/vms/WinXP.vdi", "size_mb": 10000,
                        "format": "VDI", "variant": "Standard", "remember": True}


def test_createmedium_appends_vdi_without_extension():
    c = call("createmedium", "disk", "--filename", "../disks/big", "--size", "20", "--variant", "Fixed")
    assert c.fields["filename"] == "/home/user/disks/big.vdi" and c.fields["variant"] == "Fixed"


def test_spec_storagectl_and_storageattach():
    c = call("storagectl", "Windows XP", "--name", "IDE Controller", "--add", "ide", "--controller", "PIIX4")
    assert c.fields == {"vm": "Windows XP", "name": "IDE Controller", "add": "ide", "controller": "PIIX4",
                        "remove": False}
    c = call("storageattach", "Windows XP", "--storagectl", "IDE Controller", "--port", "0", "--device", "1",
             "--type", "dvddrive", "--medium", "iso/install.iso")
    assert c.fields == {"vm": "Windows XP", "storagectl": "IDE Controller", "port": 0, "device": 1,
                        "type": "dvddrive", "medium": "/home/user/vms/iso/install.iso"}


def test_storageattach_keeps_uuids_and_keywords():
    uuid = "0f2a5c2e-1b5e-4d4b-9a7a-0123456789ab"
    assert call("storageattach", "vm", "--storagectl", "IDE", "--type", "hdd", "--medium", uuid).fields["medium"] == uuid
    assert call("storageattach", "vm", "--storagectl", "IDE", "--medium", "none").fields["medium"] == "none"
    assert call("storageattach", "vm", "--storagectl", "IDE", "--type", "dvddrive",
                "--medium", "emptydrive").fields["medium"] == "emptydrive"


def test_spec_openmedium_is_virtualbox_3s_command():
    c = call("openmedium", "dvd", "/full/path/to/iso.iso")
    assert (c.op, c.fields) == ("openmedium", {"kind": "dvd", "path": "/full/path/to/iso.iso"})


# ------------------------------------------------------------------------------------------------
# modifyvm flags

def test_vrdp_and_vrde_spellings_set_the_same_settings():
    vrdp = call("modifyvm", "vm", "--vrdp", "on", "--vrdpport", "5000,5010-5012", "--vrdpaddress", "127.0.0.1",
                "--vrdpauthtype", "external", "--vrdpmulticon", "on", "--vrdpreusecon", "off",
                "--vrdpvideochannel", "on", "--vrdpvideochannelquality", "60")
    vrde = call("modifyvm", "vm", "--vrde", "on", "--vrdeport", "5000,5010-5012", "--vrdeaddress", "127.0.0.1",
                "--vrdeauthtype", "external", "--vrdemulticon", "on", "--vrdereusecon", "off",
                "--vrdevideochannel", "on", "--vrdevideochannelquality", "60")
    assert vrdp.fields == vrde.fields
    assert vrde.fields["changes"] == {
        "vrde": True, "vrde_ports": "5000,5010-5012", "vrde_address": "127.0.0.1", "vrde_auth_type": "external",
        "vrde_multicon": True, "vrde_reusecon": False, "vrde_video_channel": True, "vrde_video_channel_quality": 60}


def test_vrde_properties_merge_and_empty_value_deletes():
    c = call("modifyvm", "vm", "--vrdeproperty", "TCP/Ports=3390", "--vrdeproperty", "Security/Method=",
             "--vrdeauthlibrary", "VBoxAuthSimple")
    assert c.fields["changes"] == {"vrde_properties": {"TCP/Ports": "3390", "Security/Method": ""},
                                   "vrde_auth_library": "VBoxAuthSimple"}


def test_teleporter_password_file_is_read_not_passed_as_a_path():
    c = call("modifyvm", "vm", "--teleporter", "on", "--teleporterport", "6000", "--teleporteraddress", "10.0.0.2",
             "--teleporterpasswordfile", "stdin", read_secret=lambda path: f"secret-from-{path}")
    assert c.fields["changes"] == {"teleporter": True, "teleporter_port": 6000, "teleporter_address": "10.0.0.2",
                                   "teleporter_password": "secret-from-stdin"}


def test_cpuid_set_remove_and_remove_all():
    c = call("modifyvm", "vm", "--cpuid", "1", "000206a7", "00100800", "1fbae3bf", "bfebfbff",
             "--cpuidset", "0x80000001", "0", "0", "1", "28100800", "--cpuidremove", "0000000b")
    assert c.fields["changes"]["cpuid"] == {"00000001": [0x206A7, 0x100800, 0x1FBAE3BF, 0xBFEBFBFF],
                                            "80000001": [0, 0, 1, 0x28100800], "0000000b": None}
    assert call("modifyvm", "vm", "--cpuidremoveall").fields["changes"] == {"cpuid": None}


def test_uart_takes_one_or_two_values():
    c = call("modifyvm", "vm", "--uart1", "0x3F8", "4", "--uartmode1", "file", "serial.log", "--usb", "off")
    assert c.fields["changes"] == {"uart1": [0x3F8, 4], "uartmode1": ["file", "/home/user/vms/serial.log"],
                                   "usb": False}
    c = call("modifyvm", "vm", "--uart1", "off", "--uartmode1", "disconnected", "--accel", "tcg")
    assert c.fields["changes"] == {"uart1": "off", "uartmode1": "disconnected", "accel": "tcg"}


def test_equals_and_single_dash_forms():
    assert call("modifyvm", "vm", "--memory=512", "-cpus", "2").fields["changes"] == {"memory": 512, "cpus": 2}


def test_nics_boot_devices_name_and_ostype():
    c = call("modifyvm", "vm", "--nic8", "hostonly", "--boot4", "net", "--name", "new", "--ostype", "Debian_64")
    assert c.fields["changes"] == {"nic8": "hostonly", "boot4": "net", "name": "new", "ostype": "Debian_64"}


@pytest.mark.parametrize("argv, message", [
    (("modifyvm", "vm", "--acpi", "maybe"), "Invalid --acpi argument 'maybe' (on or off)"),
    (("modifyvm", "vm", "--memory", "lots"), "Invalid --memory argument 'lots' (a number)"),
    (("modifyvm", "vm", "--boot1", "cdrom"), "Invalid --boot1 argument 'cdrom' (none, floppy, dvd, disk, net)"),
    (("modifyvm", "vm", "--nic9", "nat"), "Unknown option: --nic9"),
    (("modifyvm", "vm", "--vrdeport", "33a"), "Invalid --vrdeport argument '33a' (ports like 3389 or 5000,5010-5012)"),
    (("modifyvm", "vm", "--vrdeproperty", "NoEquals"), "Invalid --vrdeproperty argument 'NoEquals' (Name=Value)"),
    (("modifyvm", "vm", "--vrdevideochannelquality", "5"), "Invalid --vrdevideochannelquality argument '5' (10 to 100)"),
    (("modifyvm", "vm", "--cpuid", "1", "2", "3"), "Missing argument to '--cpuid'"),
    (("modifyvm", "vm", "--cpuid", "1", "2", "3", "4", "xyz"), "Invalid --cpuid argument 'xyz' (a hexadecimal number)"),
    (("modifyvm", "vm", "--uart1", "0x3f8", "99"), "Invalid --uart1 argument '0x3f8 99' (I/O base and IRQ 1-15)"),
    (("modifyvm", "vm", "--uartmode1", "server", "/tmp/p"), "Invalid --uartmode1 argument 'server' (disconnected or file <path>)"),
    (("modifyvm", "vm"), "modifyvm: no settings to change"),
    (("modifyvm", "vm", "extra", "--cpus", "1"), "Invalid parameter 'extra'"),
    (("modifyvm", "--cpus", "1"), "modifyvm: missing a VM name or UUID"),
    (("createvm", "--ostype", "Debian"), "createvm: --name is required"),
    (("createvm", "--name=x", "--register=yes"), "Option '--register' takes no value"),
    (("list", "everything"), "Invalid list argument 'everything' (ostypes, vms, runningvms, hdds, dvds, systemproperties)"),
    (("storagectl", "vm", "--name", "SCSI", "--add", "scsi"), "Invalid --add argument 'scsi' (ide, sata)"),
    (("storageattach", "vm", "--storagectl", "IDE", "--medium", "a.vdi"), "storageattach: --type is required"),
    (("createhd", "--filename", "a.vdi", "--size", "0"), "Invalid --size argument '0' (at least 1)"),
    (("createhd", "--filename", "a.vmdk", "--size", "10", "--format", "VMDK"), "Invalid --format argument 'VMDK' (VDI)"),
    (("startvm", "vm", "--type", "gui"), "no display on this server; use --type headless (not 'gui')"),
    (("controlvm", "vm", "explode"), "Invalid parameter 'explode'"),
    (("controlvm", "vm", "keyboardputscancode", "1c", "zz"), "'zz' is not a hex byte"),
    (("controlvm", "vm", "teleport", "--host", "h"), "controlvm teleport: --host and --port are required"),
    (("setproperty", "hwvirtexclusive", "on"), "Invalid parameter 'hwvirtexclusive'"),
    (("frobnicate",), "Invalid command 'frobnicate'"),
])
def test_mistakes_give_one_line(argv, message):
    assert error(*argv) == message


# ------------------------------------------------------------------------------------------------
# The other commands

def test_vm_lifecycle_commands():
    assert call("registervm", "My VM/My VM.vbox").fields == {"path": "/home/user/vms/My VM/My VM.vbox"}
    assert call("unregistervm", "vm", "--delete").fields == {"vm": "vm", "delete": True}
    assert call("list", "runningvms").fields == {"what": "runningvms"}
    assert call("showvminfo", "vm", "--machinereadable").options == {"machinereadable": True}
    c = call("startvm", "Windows XP", "--type", "vrdp")
    assert (c.op, c.fields) == ("startvm", {"vm": "Windows XP", "type": "vrdp"})
    assert call("startvm", "vm").fields["type"] == "headless"


def test_controlvm_actions():
    assert call("controlvm", "vm", "poweroff").fields == {"vm": "vm", "action": "poweroff", "args": []}
    assert call("controlvm", "vm", "screenshotpng", "shot.png").fields["args"] == ["/home/user/vms/shot.png"]
    assert call("controlvm", "vm", "keyboardputscancode", "1C", "9c").fields["args"] == ["1c", "9c"]
    assert call("controlvm", "vm", "vrdp", "off").fields == {"vm": "vm", "action": "vrde", "args": ["off"]}
    c = call("controlvm", "vm", "teleport", "--host", "peer", "--port", "6000", "--passwordfile", "pw",
             "--maxdowntime", "250", read_secret=lambda path: "s3cret")
    assert c.fields["args"] == {"host": "peer", "port": 6000, "password": "s3cret", "maxdowntime": 250}


def test_media_and_extradata_and_properties():
    assert call("closemedium", "disk", "old.vdi", "--delete").fields == {
        "kind": "disk", "target": "/home/user/vms/old.vdi", "delete": True}
    assert call("setextradata", "global", "GUI/Foo").fields == {"target": "global", "key": "GUI/Foo", "value": None}
    assert call("getextradata", "vm", "enumerate").fields == {"target": "vm", "key": None}
    assert call("setproperty", "vrdpauthlibrary", "VBoxAuthSimple").fields == {
        "name": "vrdeauthlibrary", "value": "VBoxAuthSimple"}
    assert call("setproperty", "machinefolder", "machines").fields["value"] == "/home/user/vms/machines"


# ------------------------------------------------------------------------------------------------
# Progress and output layouts

def test_progress_line_prints_each_tenth_once():
    line = ProgressLine()
    text = line.advance(0) + line.advance(5) + line.advance(37) + line.advance(37) + line.advance(99)
    assert text + line.finish() == "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"
    assert ProgressLine().finish() == "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"


VM = {
    "name": "Windows XP", "uuid": "5a1f0c4e-0000-4000-8000-000000000001", "ostype": "WindowsXP",
    "settings_file": "/h/Windows XP/Windows XP.vbox", "folder": "/h/Windows XP", "memory_mb": 256, "cpus": 1,
    "acpi": True, "boot": ["dvd", "disk", "none", "none"],
    "nics": [{"slot": 1, "type": "nat"}, {"slot": 2, "type": "none"}],
    "storage": [{"name": "IDE Controller", "type": "ide", "controller": "PIIX4", "ports": 2, "attachments": [
        {"port": 0, "device": 0, "type": "hdd", "medium_path": "/h/WinXP.vdi", "medium_uuid": "d1"},
        {"port": 0, "device": 1, "type": "dvddrive", "medium_path": "/iso/x.iso", "medium_uuid": "d2"}]}],
    "vrde": {"enabled": True, "ports": "3389", "address": "", "auth_type": "null", "auth_library": "VBoxAuth",
             "multicon": False, "reusecon": False, "video_channel": False, "video_channel_quality": 75,
             "properties": {}},
    "teleporter": {"enabled": False, "port": 0, "address": "", "has_password": False},
    "usb": False, "uart1": [0x3F8, 4], "uartmode1": ["file", "/h/serial.log"], "accel": "auto",
    "cpuid": {}, "extradata_count": 0, "state": "Running", "state_since": "2026-11-27T12:00:00Z",
    "vrde_port_bound": 3390,
}


def test_showvminfo_layout():
    text = output.showvminfo(VM)
    lines = text.splitlines()
    assert lines[0] == "Name:                        Windows XP"
    for expected in ("Guest OS:                    WindowsXP",
                     "UUID:                        5a1f0c4e-0000-4000-8000-000000000001",
                     "Config file:                 /h/Windows XP/Windows XP.vbox",
                     "Memory size:                 256MB",
                     "Number of CPUs:              1",
                     "Boot Device 1:               DVD",
                     "Boot Device 2:               HardDisk",
                     "Boot Device 3:               Not Assigned",
                     "ACPI:                        on",
                     "State:                       running (since 2026-11-27T12:00:00Z)",
                     "Storage Controller Name (0):            IDE Controller",
                     "Storage Controller Type (0):            PIIX4",
                     "IDE Controller (0, 0): /h/WinXP.vdi (UUID: d1)",
                     "IDE Controller (0, 1): /iso/x.iso (UUID: d2)",
                     "NIC 1:                       Attachment: NAT, Cable connected: on",
                     "NIC 2:                       disabled",
                     "UART 1:                      I/O base: 0x03f8, IRQ: 4, attached to raw file '/h/serial.log'",
                     "VRDE:                        enabled (Address 0.0.0.0, Ports 3389, MultiConn: off, "
                     "ReuseSingleConn: off, Authentication type: null)",
                     "VRDE port:                   3390",
                     'VRDE property               : TCP/Ports  = "3389"',
                     "VRDE property               : TCP/Address = <not set>",
                     "VRDE Connection:             not active"):
        assert expected in lines, expected


def test_showvminfo_powered_off_has_no_bound_port():
    text = output.showvminfo({**VM, "state": "PoweredOff", "vrde_port_bound": None})
    assert "State:                       powered off (since 2026-11-27T12:00:00Z)" in text
    assert "VRDE port:" not in text and "VRDE Connection:" not in text
    assert "vrdeport=-1\n" in output.showvminfo({**VM, "state": "PoweredOff"}, machine_readable=True)


def test_showvminfo_machine_readable():
    lines = output.showvminfo(VM, machine_readable=True).splitlines()
    for expected in ('name="Windows XP"', 'UUID="5a1f0c4e-0000-4000-8000-000000000001"', "memory=256", "cpus=1",
                     'boot1="dvd"', 'boot3="none"', 'acpi="on"', 'nic1="nat"', 'nic2="none"',
                     'VMState="running"', '"IDE Controller-0-0"="/h/WinXP.vdi"',
                     '"IDE Controller-ImageUUID-0-1"="d2"', 'storagecontrollertype0="PIIX4"',
                     'uart1="0x03f8,4"', 'uartmode1="file,/h/serial.log"', 'vrde="on"', "vrdeport=3390",
                     'vrdeports="3389"', 'vrdeaddress="0.0.0.0"', 'vrdeproperty[TCP/Ports]="3389"',
                     "vrdeproperty[TCP/Address]=<not set>", 'teleporterenabled="off"'):
        assert expected in lines, expected
    assert all("=" in line for line in lines)


def test_showvminfo_cpuid_and_vrde_off():
    text = output.showvminfo({**VM, "cpuid": {"00000001": [1, 2, 3, 4]}, "vrde": {"enabled": False},
                              "state": "PoweredOff"})
    assert "CPUID overrides:             Leaf no.  EAX      EBX      ECX      EDX" in text
    assert "\n                             00000001  00000001 00000002 00000003 00000004\n" in text
    assert "VRDE:                        disabled\n" in text and "VRDE port" not in text


def test_list_layouts():
    assert output.list_output("vms", [{"name": "a b", "uuid": "u1"}, {"name": "c", "uuid": "u2"}]) == \
        '"a b" {u1}\n"c" {u2}\n'
    ostypes = output.list_output("ostypes", [{"id": "WindowsXP", "description": "Windows XP (32-bit)",
                                              "family": "Windows", "bits": 32}])
    assert ostypes.startswith("ID:          WindowsXP\nDescription: Windows XP (32-bit)\nFamily ID:   Windows\n")
    hdds = output.list_output("hdds", [{"uuid": "d1", "path": "/h/a.vdi", "format": "VDI", "state": "created",
                                        "capacity_mb": 10000, "in_use_by": ["Windows XP"]}])
    assert "Location:       /h/a.vdi\n" in hdds and "Capacity:       10000 MBytes\n" in hdds
    assert "In use by VMs:  Windows XP\n" in hdds


def test_createvm_medium_and_extradata_output():
    assert output.createvm({"name": "x", "uuid": "u", "settings_file": "/h/x/x.vbox"}, True) == \
        "Virtual machine 'x' is created and registered.\nUUID: u\nSettings file: '/h/x/x.vbox'\n"
    assert output.medium_created({"uuid": "d1", "path": "/p"}) == "Medium created. UUID: d1\n"
    assert output.extradata(None, False) == "No value set!\n"
    assert output.extradata("v", False) == "Value: v\n"
    assert output.extradata([{"key": "k", "value": "v"}], True) == "Key: k, Value: v\n"


# ------------------------------------------------------------------------------------------------
# VBoxHeadless

def test_vboxheadless_options():
    from services.manager.cli.vboxheadless import parse as headless
    assert headless(["--startvm", "Windows XP"]) == {"vm": "Windows XP", "vrde": "on", "properties": {},
                                                      "help": False, "version": False}
    parsed = headless(["-startvm", "x", "--vrdp=config", "-e", "TCP/Ports=5000-5005", "--vrdpaddress", "127.0.0.1"])
    assert parsed["vrde"] == "config"
    assert parsed["properties"] == {"TCP/Ports": "5000-5005", "TCP/Address": "127.0.0.1"}
    assert headless(["-s", "x", "-v", "off"])["vrde"] == "off"
    for argv, message in ((["--vrde", "on"], "--startvm <name|uuid> is required"),
                          (["--startvm", "x", "--vrde", "maybe"], "--vrde requires an argument (on|off|config), not 'maybe'"),
                          (["--startvm", "x", "-e", "TCP/Ports"], "Invalid VRDE property 'TCP/Ports'"),
                          (["--startvm", "x", "y"], "Invalid parameter 'y'")):
        with pytest.raises(UsageError) as caught:
            headless(argv)
        assert str(caught.value) == message


def test_vboxheadless_vrde_settings_follow_the_vm_and_the_command_line():
    from services.ipc.vrde import VrdeConfig
    from services.manager.cli.vboxheadless import headless_vrde
    settings = VrdeConfig(vm_name="Windows XP", enabled=False, ports="3389", properties={"Security/Method": "TLS"},
                          users={"john": "a" * 64}, state_dir="/h/Windows XP")
    on = headless_vrde(settings, "on", {"TCP/Ports": "5000", "TCP/Address": "127.0.0.1"})
    assert on.enabled and on.ports == "5000" and on.address == "127.0.0.1"
    assert on.properties == {"Security/Method": "TLS"} and on.users == {"john": "a" * 64}
    assert not headless_vrde(settings, "config", {}).enabled
    assert not headless_vrde(dataclasses.replace(settings, enabled=True), "off", {}).enabled
    assert headless_vrde(dataclasses.replace(settings, enabled=True), "config", {}).enabled



def test_system_properties_layout():
    text = output.list_output("systemproperties", [
        {"key": "machinefolder", "label": "Default machine folder", "value": "/h/Machines"},
        {"key": "minguestram", "label": "Minimum guest RAM size", "value": "4 Megabytes"}])
    assert text == ("Default machine folder:           /h/Machines\n"
                    "Minimum guest RAM size:           4 Megabytes\n")


def test_showvminfo_vrde_on_for_a_vboxheadless_run_of_a_vm_with_vrde_off():
    info = {**VM, "vrde": {**VM["vrde"], "enabled": False}}
    assert "VRDE port:                   3390\n" in output.showvminfo(info)
    assert "vrdeport=3390\n" in output.showvminfo(info, machine_readable=True)
    assert "VRDE:                        disabled\n" in output.showvminfo({**info, "state": "PoweredOff"})


def test_vboxmanage_imports_stay_light():
    """`list vms` must start fast: VBoxManage's path never imports the VM's heavy modules."""
    import subprocess
    import sys
    probe = ("import sys, services.manager.cli.vboxmanage, services.manager.client; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'unicorn', 'PIL', 'cryptography')"
             " or m.startswith(('services.vcpu', 'services.devices', 'services.vrdp', 'services.headless'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
