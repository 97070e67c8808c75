"""The settings ops on real files in a temporary settings home: the spec's headless-server
walkthrough, every modifyvm key, media, extradata, properties, and what the daemon is given."""

import hashlib
import os
import stat
import xml.etree.ElementTree as ET

import pytest

from services.manager.errors import INVALID_VM_STATE, ManagerError
from services.manager.settings import Settings, machine_xml, registry_xml
from services.manager.settings.model import (
    Attachment,
    Controller,
    Machine,
    MachineEntry,
    Medium,
    Nic,
    Registry,
    Teleporter,
    Vrde,
)

MiB = 1 << 20


def make_iso(path):
    """The smallest file our ISO reader accepts: 16 empty sectors and a CD001 descriptor."""
    with open(path, "wb") as f:
        f.write(bytes(16 * 2048) + b"\x01CD001\x01" + bytes(2048 - 7))
    return str(path)


def all_files(home):
    for folder, _dirs, files in os.walk(home):
        for name in files:
            yield os.path.join(folder, name)


@pytest.fixture
def settings(tmp_path):
    return Settings(str(tmp_path / "home"))


@pytest.fixture
def xp(settings, tmp_path):
    """The spec's "Windows XP" VM: created, registered, a disk and an ISO attached to IDE."""
    settings.createvm(name="Windows XP", ostype="WindowsXP", register=True)
    settings.modifyvm(vm="Windows XP", changes={"memory": 256, "acpi": True, "boot1": "dvd",
                                                "nic1": "nat"})
    disk = str(tmp_path / "WinXP.vdi")
    settings.createmedium(kind="disk", filename=disk, size_mb=10, remember=True)
    settings.storagectl(vm="Windows XP", name="IDE Controller", add="ide", controller="PIIX4")
    settings.storageattach(vm="Windows XP", storagectl="IDE Controller", port=0, device=0,
                           type="hdd", medium=disk)
    iso = make_iso(tmp_path / "install.iso")
    settings.openmedium(kind="dvd", path=iso)
    settings.storageattach(vm="Windows XP", storagectl="IDE Controller", port=0, device=1,
                           type="dvddrive", medium=iso)
    return {"disk": disk, "iso": iso}


def test_the_spec_walkthrough_gives_a_runnable_vm(settings, xp):
    info = settings.showvminfo(vm="Windows XP")
    assert info["ostype"] == "WindowsXP" and info["memory_mb"] == 256 and info["acpi"] is True
    assert info["vram_mb"] == 16 and info["nics"][0]["type"] == "nat"
    assert info["nics"][0]["adapter"] == "I82543GC"
    assert info["boot"][0] == "dvd"
    [ide] = info["storage"]
    assert (ide["name"], ide["type"], ide["controller"], ide["ports"]) == ("IDE Controller", "ide", "PIIX4", 2)
    assert [(a["port"], a["device"], a["type"], a["medium_path"]) for a in ide["attachments"]] == [
        (0, 0, "hdd", xp["disk"]), (0, 1, "dvddrive", xp["iso"])]
    spec = settings.launch_spec("Windows XP")
    assert spec.vm_id == info["uuid"] and spec.memory_mib == 256
    assert spec.boot == ("dvd", "disk")
    assert [d.text() for d in spec.drives] == [f"0:0:hdd:{xp['disk']}", f"0:1:dvd:{xp['iso']}"]
    assert spec.ide_controller == "piix4" and spec.acpi is True
    assert spec.serial_log is None and spec.vrde.state_dir == info["folder"]
    assert settings.vm_uuid("Windows XP") == info["uuid"] == settings.vm_uuid(info["uuid"])
    assert settings.vm_uuid("{" + info["uuid"].upper() + "}") == info["uuid"]
    assert settings.vm_folder(info["uuid"]) == info["folder"]


def test_files_are_private_and_virtualbox_shaped(settings, xp):
    home = settings.home
    info = settings.showvminfo(vm="Windows XP")
    assert info["settings_file"] == os.path.join(home, "Machines", "Windows XP", "Windows XP.vbox")
    assert os.path.isdir(os.path.join(info["folder"], "Logs"))
    for path in [os.path.join(home, "Headbox.xml"), info["settings_file"]]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for path in [home, os.path.join(home, "Machines"), info["folder"]]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    ns = "{http://www.virtualbox.org/}"
    machine = ET.parse(info["settings_file"]).getroot().find(f"{ns}Machine")
    assert machine.get("uuid") == "{" + info["uuid"] + "}" and machine.get("OSType") == "WindowsXP"
    assert machine.find(f"{ns}Hardware/{ns}Memory").get("RAMSize") == "256"
    glob = ET.parse(os.path.join(home, "Headbox.xml")).getroot().find(f"{ns}Global")
    assert glob.find(f"{ns}MachineRegistry/{ns}MachineEntry").get("src") == info["settings_file"]
    assert glob.find(f"{ns}MediaRegistry/{ns}HardDisks/{ns}HardDisk").get("location") == xp["disk"]
    assert glob.find(f"{ns}MediaRegistry/{ns}DVDImages/{ns}Image").get("location") == xp["iso"]


def test_ostype_defaults_apply_at_createvm(settings):
    settings.createvm(name="deb", ostype="debian_64", register=True)
    info = settings.showvminfo(vm="deb")
    assert info["ostype"] == "Debian_64"
    assert (info["memory_mb"], info["ioapic"], info["rtc_utc"]) == (1024, True, True)
    assert info["nics"][0]["adapter"] == "I82540EM"
    settings.createvm(name="plain", register=True)
    plain = settings.showvminfo(vm="plain")
    assert (plain["ostype"], plain["memory_mb"], plain["boot"]) == ("Other", 128, ["floppy", "dvd", "disk", "none"])
    assert plain["vrde"]["enabled"] is False and plain["vrde"]["ports"] == "3389"


def test_createvm_without_register_then_registervm(settings):
    made = settings.createvm(name="later")
    assert os.path.exists(made["settings_file"])
    assert settings.list(what="vms") == []
    assert settings.registervm(path=made["settings_file"]) == {"uuid": made["uuid"], "name": "later"}
    assert settings.list(what="vms") == [{"name": "later", "uuid": made["uuid"]}]


def test_basefolder(settings, tmp_path):
    made = settings.createvm(name="elsewhere", register=True, basefolder=str(tmp_path / "vms"))
    assert made["settings_file"] == str(tmp_path / "vms" / "elsewhere" / "elsewhere.vbox")


def test_unregistervm_keeps_files_and_delete_removes_them(settings, xp, tmp_path):
    info = settings.showvminfo(vm="Windows XP")
    settings.unregistervm(vm="Windows XP")
    assert settings.list(what="vms") == [] and os.path.exists(info["settings_file"])
    assert [m["path"] for m in settings.list(what="hdds")] == [xp["disk"]]

    settings.registervm(path=info["settings_file"])
    spare = str(tmp_path / "spare.vdi")
    settings.createmedium(filename=spare, size_mb=1)
    settings.unregistervm(vm="Windows XP", delete=True)
    assert not os.path.exists(info["folder"]) and not os.path.exists(xp["disk"])
    assert [m["path"] for m in settings.list(what="hdds")] == [spare]
    assert os.path.exists(xp["iso"]) and [m["path"] for m in settings.list(what="dvds")] == [xp["iso"]]
    assert settings.list(what="vms") == []


def test_unregistervm_delete_keeps_the_users_own_files(settings):
    made = settings.createvm(name="mine", register=True)
    folder = os.path.dirname(made["settings_file"])
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("keep me")
    settings.unregistervm(vm="mine", delete=True)
    assert os.listdir(folder) == ["notes.txt"]


def test_modifyvm_every_key(settings, xp):
    settings.modifyvm(vm="Windows XP", changes={
        "memory": 512, "cpus": 2, "acpi": False, "boot1": "disk", "boot2": "dvd", "boot3": "none",
        "boot4": "net", "nic2": "intnet", "nic8": "hostonly", "vrde": True,
        "vrde_ports": "5000,5010-5012", "vrde_address": "127.0.0.1", "vrde_auth_type": "external",
        "vrde_auth_library": "VBoxAuthSimple", "vrde_multicon": True, "vrde_reusecon": True,
        "vrde_video_channel": True, "vrde_video_channel_quality": 40,
        "vrde_properties": {"Security/Method": "TLS", "Client/DisableAudio": "1"},
        "teleporter": True, "teleporter_port": 6000, "teleporter_address": "10.0.0.1",
        "teleporter_password": "s3cret", "cpuid": {"80000001": [1, 2, 3, 0xFFFFFFFF], "1": [5, 6, 7, 8]},
        "usb": True, "uart1": [0x3F8, 4], "uartmode1": ["file", "/tmp/serial.log"], "accel": "tcg",
        "ostype": "Ubuntu_64"})
    info = settings.showvminfo(vm="Windows XP")
    assert (info["memory_mb"], info["cpus"], info["acpi"]) == (512, 2, False)
    assert info["boot"] == ["disk", "dvd", "none", "net"]
    assert [n["type"] for n in info["nics"]] == ["nat", "intnet", "none", "none", "none", "none", "none", "hostonly"]
    v = info["vrde"]
    assert (v["enabled"], v["ports"], v["address"], v["auth_type"], v["auth_library"]) == (
        True, "5000,5010-5012", "127.0.0.1", "external", "VBoxAuthSimple")
    assert (v["multicon"], v["reusecon"], v["video_channel"], v["video_channel_quality"]) == (True, True, True, 40)
    assert v["properties"]["Security/Method"] == "TLS" and v["properties"]["VideoChannel/Enabled"] == "true"
    assert info["teleporter"] == {"enabled": True, "port": 6000, "address": "10.0.0.1", "has_password": True}
    assert info["cpuid"] == {"00000001": [5, 6, 7, 8], "80000001": [1, 2, 3, 0xFFFFFFFF]}
    assert (info["usb"], info["uart1"], info["uartmode1"], info["accel"], info["ostype"]) == (
        True, [0x3F8, 4], ["file", "/tmp/serial.log"], "tcg", "Ubuntu_64")
    assert settings.cpuid("Windows XP") == {1: [5, 6, 7, 8], 0x80000001: [1, 2, 3, 0xFFFFFFFF]}
    tele = settings.teleporter("Windows XP")
    assert tele["password_hash"] == "#SHA-512##" + hashlib.sha512(b"s3cret").hexdigest()
    with pytest.raises(ManagerError, match="intnet"):     # stored, but no internal network is built
        settings.launch_spec("Windows XP")
    settings.modifyvm(vm="Windows XP", changes={"nic2": "null", "nic8": "none"})
    assert settings.launch_spec("Windows XP").serial_log == "/tmp/serial.log"

    settings.modifyvm(vm="Windows XP", changes={
        "vrde_ports": "default", "vrde_address": "", "vrde_properties": {"Security/Method": ""},
        "cpuid": {"1": None}, "uart1": "off", "uartmode1": "disconnected", "teleporter": False,
        "teleporter_password": "", "vrde_auth_library": "default"})
    info = settings.showvminfo(vm="Windows XP")
    assert info["vrde"]["ports"] == "3389" and info["vrde"]["address"] == ""
    assert "Security/Method" not in info["vrde"]["properties"] and info["vrde"]["auth_library"] == "VBoxAuth"
    assert info["cpuid"] == {"80000001": [1, 2, 3, 0xFFFFFFFF]}
    assert (info["uart1"], info["uartmode1"]) == ("off", "disconnected")
    assert info["teleporter"]["has_password"] is False and info["teleporter"]["enabled"] is False
    settings.modifyvm(vm="Windows XP", changes={"cpuid": None, "vrde_ports": "0"})
    info = settings.showvminfo(vm="Windows XP")
    assert info["cpuid"] == {} and info["vrde"]["ports"] == "3389"


def test_rename_moves_the_folder_and_the_media_inside_it(settings):
    made = settings.createvm(name="old", register=True)
    folder = os.path.dirname(made["settings_file"])
    disk = os.path.join(folder, "old.vdi")
    settings.createmedium(filename=disk, size_mb=1)
    settings.storagectl(vm="old", name="IDE", add="ide")
    settings.storageattach(vm="old", storagectl="IDE", port=0, device=0, type="hdd", medium=disk)
    settings.modifyvm(vm="old", changes={"name": "new"})
    new_folder = os.path.join(os.path.dirname(folder), "new")
    assert not os.path.exists(folder)
    assert sorted(os.listdir(new_folder)) == ["Logs", "new.vbox", "old.vdi"]
    info = settings.showvminfo(vm="new")
    assert info["settings_file"] == os.path.join(new_folder, "new.vbox") and info["uuid"] == made["uuid"]
    assert [d.text() for d in settings.launch_spec("new").drives] == [f"0:0:hdd:{new_folder}/old.vdi"]


def test_a_running_vm_takes_only_vrde_and_teleporter_changes(tmp_path):
    states = {}
    settings = Settings(str(tmp_path / "home"), vm_state=lambda uuid: states.get(uuid, "PoweredOff"))
    uuid = settings.createvm(name="vm", register=True)["uuid"]
    states[uuid] = "Running"
    settings.modifyvm(vm="vm", changes={"vrde": True, "vrde_ports": "3390", "teleporter_port": 7000})
    assert settings.showvminfo(vm="vm")["vrde"]["ports"] == "3390"
    for changes in ({"memory": 64}, {"memory": 64, "vrde": False}, {"teleporter": True}):
        with pytest.raises(ManagerError) as err:
            settings.modifyvm(vm="vm", changes=changes)
        assert (err.value.code, err.value.message) == (INVALID_VM_STATE, "The machine is not mutable (state is Running)")
    assert settings.showvminfo(vm="vm")["vrde"]["enabled"] is True
    with pytest.raises(ManagerError) as err:
        settings.storagectl(vm="vm", name="IDE", add="ide")
    assert err.value.code == INVALID_VM_STATE
    assert settings.list(what="runningvms") == [{"name": "vm", "uuid": uuid}]
    states[uuid] = "Saved"
    with pytest.raises(ManagerError) as err:
        settings.modifyvm(vm="vm", changes={"teleporter": True})
    assert err.value.message == "The machine is not powered off (state is Saved)"


def test_extradata_vm_and_global(settings, xp):
    settings.setextradata(target="Windows XP", key="GUI/Foo", value="bar")
    settings.setextradata(target="global", key="GUI/Foo", value="baz")
    assert settings.getextradata(target="Windows XP", key="GUI/Foo") == "bar"
    assert settings.getextradata(target="global", key="GUI/Foo") == "baz"
    assert settings.getextradata(target="Windows XP", key="Missing") is None
    settings.setextradata(target="Windows XP", key="A", value="1")
    assert settings.getextradata(target="Windows XP", key=None) == [
        {"key": "A", "value": "1"}, {"key": "GUI/Foo", "value": "bar"}]
    settings.setextradata(target="Windows XP", key="A", value=None)
    settings.setextradata(target="Windows XP", key="GUI/Foo", value="")
    assert settings.getextradata(target="Windows XP", key=None) == []
    assert settings.getextradata(target="global", key=None) == [{"key": "GUI/Foo", "value": "baz"}]


def test_auth_simple_users_are_stored_hashed_and_given_to_vrdp(settings, xp):
    sha = hashlib.sha256
    settings.setextradata(target="Windows XP", key="VBoxAuthSimple/users/john", value="secret")
    settings.setextradata(target="Windows XP", key="VBoxAuthSimple/users/anna", value="A" * 64)
    settings.setextradata(target="Windows XP", key="VBoxAuthSimple/users/guest", value="[NULL]")
    settings.setextradata(target="global", key="VBoxAuthSimple/users/john", value="other")
    settings.setextradata(target="global", key="VBoxAuthSimple/users/root", value="toor")
    settings.modifyvm(vm="Windows XP", changes={"teleporter_password": "hunter2"})
    assert settings.getextradata(target="Windows XP", key="VBoxAuthSimple/users/john") == \
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    users = settings.vrde_config("Windows XP")["users"]
    assert users == {"john": sha(b"secret").hexdigest(), "anna": "a" * 64,
                     "guest": sha(b"").hexdigest(), "root": sha(b"toor").hexdigest()}
    for path in all_files(settings.home):
        with open(path, "rb") as f:
            data = f.read()
        for secret in (b"secret", b"toor", b"hunter2", b">other<", b'"other"'):
            assert secret not in data, (path, secret)


def test_vrde_config_has_the_contract_fields(settings, xp):
    settings.modifyvm(vm="Windows XP", changes={"vrde": True, "vrde_ports": "3390-3392",
                                                "vrde_properties": {"Security/Method": "RDP"}})
    settings.setextradata(target="Windows XP", key="VRDP/Feature/Client/DisableAudio", value="1")
    settings.setextradata(target="Windows XP", key="VRDP/Feature/Client/DisableUSB", value="1")
    settings.setextradata(target="Windows XP", key="VRDE/Feature/Client/DisableUSB", value="")
    settings.setextradata(target="Windows XP", key="VRDE/Feature/Client/DisableInput", value="1")
    config = settings.vrde_config("Windows XP")
    info = settings.showvminfo(vm="Windows XP")
    assert config == {
        "vm_name": "Windows XP", "vm_uuid": info["uuid"], "enabled": True, "ports": "3390-3392",
        "address": "", "auth_type": "null", "auth_library": "VBoxAuth", "auth_timeout_ms": 5000,
        "multicon": False, "reusecon": False, "video_channel": False, "video_channel_quality": 75,
        "properties": {"TCP/Ports": "3390-3392", "Security/Method": "RDP"},
        "features": {"Client/DisableAudio": "1", "Client/DisableUSB": "1", "Client/DisableInput": "1"},
        "users": {}, "state_dir": info["folder"]}
    settings.setproperty(name="vrdpauthlibrary", value="VBoxAuthSimple")
    assert settings.vrde_config("Windows XP")["auth_library"] == "VBoxAuthSimple"
    # a hand-edited settings file cannot hand the RDP server what it would refuse
    path = settings.showvminfo(vm="Windows XP")["settings_file"]
    with open(path) as f:
        text = f.read()
    text = text.replace('authTimeout="5000"', 'authTimeout="9999999"').replace(
        "</ExtraData>", '<ExtraDataItem name="VBoxAuthSimple/users/eve" value="plain" /></ExtraData>')
    with open(path, "w") as f:
        f.write(text)
    config = settings.vrde_config("Windows XP")
    assert config["auth_timeout_ms"] == 600_000 and "eve" not in config["users"]
    settings.modifyvm(vm="Windows XP", changes={"vrde_auth_library": "/opt/mylib.so"})
    assert settings.vrde_config("Windows XP")["auth_library"] == "/opt/mylib.so"


def test_setproperty_and_systemproperties(settings, tmp_path):
    settings.setproperty(name="machinefolder", value=str(tmp_path / "vms"))
    settings.setproperty(name="vrdeauthlibrary", value="VBoxAuthSimple")
    made = settings.createvm(name="x", register=True)
    assert made["settings_file"] == str(tmp_path / "vms" / "x" / "x.vbox")
    props = {p["key"]: p["value"] for p in settings.list(what="systemproperties")}
    assert props["machinefolder"] == str(tmp_path / "vms") and props["vrdeauthlibrary"] == "VBoxAuthSimple"
    settings.setproperty(name="machinefolder", value="default")
    settings.setproperty(name="vrdeauthlibrary", value=None)
    props = {p["key"]: p["value"] for p in settings.list(what="systemproperties")}
    assert props["machinefolder"] == os.path.join(settings.home, "Machines")
    assert props["vrdeauthlibrary"] == "VBoxAuth"


def test_list_ostypes_and_media(settings, xp):
    types = settings.list(what="ostypes")
    assert [t["id"] for t in types[:3]] == ["Other", "Other_64", "Windows31"]
    xp_row = next(t for t in types if t["id"] == "WindowsXP")
    assert (xp_row["ram_mb"], xp_row["vram_mb"], xp_row["disk_mb"], xp_row["bits"], xp_row["family"]) == (
        192, 16, 10240, 32, "Windows")
    [hdd] = settings.list(what="hdds")
    assert (hdd["path"], hdd["format"], hdd["state"], hdd["capacity_mb"], hdd["in_use_by"]) == (
        xp["disk"], "VDI", "created", 10, ["Windows XP"])
    [dvd] = settings.list(what="dvds")
    assert (dvd["path"], dvd["format"], dvd["in_use_by"]) == (xp["iso"], "ISO", ["Windows XP"])
    os.unlink(xp["iso"])
    assert settings.list(what="dvds")[0]["state"] == "inaccessible"


def test_createmedium_fixed_reports_progress_and_allocates(settings, tmp_path):
    seen = []
    path = str(tmp_path / "fixed.vdi")
    made = settings.createmedium(filename=path, size_mb=8, variant="Fixed", progress=seen.append)
    assert seen[-1] == 100 and seen == sorted(seen) and len(seen) >= 10
    assert os.stat(path).st_blocks * 512 >= 8 * MiB
    assert settings.list(what="hdds")[0]["uuid"] == made["uuid"]
    from services.images import vdi
    with vdi.VdiImage(path, os.open(path, os.O_RDONLY), readonly=True) as img:
        assert (str(img.uuid), img.size, img.variant) == (made["uuid"], 8 * MiB, "Fixed")


def test_openmedium_closemedium(settings, tmp_path, xp):
    iso = make_iso(tmp_path / "other.iso")
    first = settings.openmedium(kind="dvd", path=iso)
    assert settings.openmedium(kind="dvd", path=iso) == first
    settings.closemedium(kind="dvd", target=first["uuid"])
    assert [d["path"] for d in settings.list(what="dvds")] == [xp["iso"]]
    settings.storageattach(vm="Windows XP", storagectl="IDE Controller", port=0, device=0, medium="none")
    settings.closemedium(kind="disk", target=xp["disk"], delete=True)
    assert settings.list(what="hdds") == [] and not os.path.exists(xp["disk"])
    # an unregistered image is opened and closed, as VirtualBox does: nothing to forget
    loose = str(tmp_path / "loose.vdi")
    settings.createmedium(filename=loose, size_mb=1)
    settings.closemedium(kind="disk", target=loose)
    settings.closemedium(kind="disk", target=loose)
    assert settings.list(what="hdds") == [] and os.path.exists(loose)
    settings.closemedium(kind="disk", target=loose, delete=True)
    assert not os.path.exists(loose)


def test_storageattach_registers_a_new_path_empties_and_detaches(settings, xp, tmp_path):
    iso = make_iso(tmp_path / "second.iso")
    settings.storageattach(vm="Windows XP", storagectl="IDE Controller", port=1, device=0,
                           type="dvddrive", medium=iso)
    assert iso in [d["path"] for d in settings.list(what="dvds")]
    settings.storageattach(vm="Windows XP", storagectl="IDE Controller", port=0, device=1,
                           type="dvddrive", medium="emptydrive")
    settings.storageattach(vm="Windows XP", storagectl="IDE Controller", port=0, device=0, medium="none")
    assert [d.text() for d in settings.launch_spec("Windows XP").drives] == ["0:1:dvd", f"1:0:dvd:{iso}"]


def test_launch_spec_refuses_what_cannot_run(settings, xp):
    settings.storagectl(vm="Windows XP", name="SATA", add="sata", controller="IntelAhci")
    assert settings.launch_spec("Windows XP").drives             # an empty SATA controller is fine
    settings.storageattach(vm="Windows XP", storagectl="IDE Controller", port=0, device=0, medium="none")
    settings.storageattach(vm="Windows XP", storagectl="SATA", port=3, device=0, type="hdd", medium=xp["disk"])
    with pytest.raises(ManagerError, match="SATA controllers are not emulated; attach the disk to an IDE controller"):
        settings.launch_spec("Windows XP")
    settings.storagectl(vm="Windows XP", name="SATA", remove=True)
    settings.modifyvm(vm="Windows XP", changes={"uart1": [0x2F8, 3]})
    with pytest.raises(ManagerError, match=r"only COM1 \(--uart1 0x3F8 4\) exists"):
        settings.launch_spec("Windows XP")
    settings.modifyvm(vm="Windows XP", changes={"uart1": "off", "boot1": "none", "boot2": "net",
                                                "boot3": "floppy", "boot4": "none"})
    with pytest.raises(ManagerError, match="No boot device"):
        settings.launch_spec("Windows XP")
    settings.modifyvm(vm="Windows XP", changes={"boot1": "disk"})
    os.unlink(xp["iso"])
    with pytest.raises(ManagerError, match="Could not find file for the medium .*VERR_FILE_NOT_FOUND"):
        settings.launch_spec("Windows XP")


def test_vm_state_may_be_the_daemons_map(tmp_path):
    run = {"state": "Running", "state_since": "2026-01-02T03:04:05Z", "vrde_port_bound": 3390}
    settings = Settings(str(tmp_path / "home"), vm_state=lambda uuid: run)
    settings.createvm(name="vm", register=True)
    info = settings.showvminfo(vm="vm")
    assert (info["state"], info["state_since"], info["vrde_port_bound"]) == ("Running", "2026-01-02T03:04:05Z", 3390)
    with pytest.raises(ManagerError, match=r"not mutable \(state is Running\)"):
        settings.modifyvm(vm="vm", changes={"cpus": 2})
    run.update(state="PoweredOff", vrde_port_bound=None)
    settings.modifyvm(vm="vm", changes={"cpus": 2})
    assert settings.showvminfo(vm="vm")["vrde_port_bound"] is None


def test_the_consumers_accept_what_the_daemon_is_given(settings, xp):
    """The launch spec the processes load takes these fields as they are."""
    from services.ipc.spec import LaunchSpec
    from services.ipc.vrde import VrdeConfig
    settings.modifyvm(vm="Windows XP", changes={"vrde": True, "vrde_ports": "5000,5010-5012",
                                                "vrde_auth_type": "external"})
    settings.setextradata(target="Windows XP", key="VBoxAuthSimple/users/u", value="p")
    config = VrdeConfig.from_dict(settings.vrde_config("Windows XP"))
    assert (config.ports, config.auth_type, config.users["u"]) == (
        "5000,5010-5012", "external", hashlib.sha256(b"p").hexdigest())
    spec = LaunchSpec.from_bytes(settings.launch_spec("Windows XP").to_bytes())
    assert spec.drives[0].text() == f"0:0:hdd:{xp['disk']}" and spec.vrde == config


def test_machine_and_registry_xml_round_trip():
    """Every field survives to_xml/from_xml, so no setting is lost between two operations."""
    m = Machine(uuid="0b5e9a3c-1111-2222-3333-444455556666", name="Ünïcode & <xml>", ostype="Debian_64",
                memory_mb=777, vram_mb=32, cpus=3, acpi=False, ioapic=True, rtc_utc=True,
                boot=["net", "disk", "none", "dvd"],
                nics=[Nic("bridged", "I82540EM", "080027000001"), Nic("null", "Am79C973", "080027000002")]
                + [Nic("none", "Am79C973", f"08002700000{i}") for i in range(3, 9)],
                usb=True, uart1=(0x3F8, 4), uartmode1=("file", "/var/log/com1.log"), accel="kvm",
                cpuid={1: [1, 2, 3, 4], 0x80000001: [0xFFFFFFFF, 0, 0, 7]},
                vrde=Vrde(True, "external", "VBoxAuthSimple", 3000, True, False,
                          {"TCP/Ports": "5000-5010", "Security/Method": "TLS"}),
                teleporter=Teleporter(True, 6000, "10.0.0.2", "#SHA-512##abcd"),
                controllers=[Controller("IDE Controller", "IDE", "PIIX3", 2,
                                        [Attachment(0, 0, "hdd", "aaaaaaaa-1111-2222-3333-444455556666"),
                                         Attachment(1, 0, "dvd", None)]),
                             Controller("SATA", "SATA", "IntelAhci", 30, [])],
                extradata={"a": "1", "VRDE/Feature/Client/DisableUSB": "1"},
                last_state_change="2026-01-01T00:00:00Z")
    assert machine_xml.from_xml(machine_xml.to_xml(m), "x.vbox") == m
    reg = Registry([MachineEntry(m.uuid, "/vms/x/x.vbox")],
                   [Medium("aaaaaaaa-1111-2222-3333-444455556666", "/d/a.vdi", "hdd", "VDI"),
                    Medium("bbbbbbbb-1111-2222-3333-444455556666", "/d/b.iso", "dvd", "ISO")],
                   {"GUI/x": "y"}, {"defaultMachineFolder": "/vms", "VRDEAuthLibrary": "VBoxAuthSimple"})
    assert registry_xml.from_xml(registry_xml.to_xml(reg), "Headbox.xml") == reg
