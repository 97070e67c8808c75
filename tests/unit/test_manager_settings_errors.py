"""Every user mistake in a settings op: the right code, one line in VirtualBox's wording, and the
settings home byte for byte (and mode for mode) as it was."""

import os

import pytest

from services.manager.errors import (
    E_INVALIDARG,
    FILE_ERROR,
    INVALID_OBJECT_STATE,
    INVALID_VM_STATE,
    OBJECT_NOT_FOUND,
    ManagerError,
)
from services.manager.settings import Settings


def make_iso(path):
    with open(path, "wb") as f:
        f.write(bytes(16 * 2048) + b"\x01CD001\x01" + bytes(2048 - 7))
    return str(path)


def snapshot(*roots):
    """Every file and folder under roots: content and mode."""
    seen = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            seen[folder] = ("dir", os.stat(folder).st_mode)
            for name in files:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    seen[path] = (f.read(), os.stat(path).st_mode)
    return seen


@pytest.fixture
def world(tmp_path):
    """Two VMs (one "running"), a disk attached to the first, a free disk and a free ISO."""
    states = {}
    s = Settings(str(tmp_path / "home"), vm_state=lambda uuid: states.get(uuid, "PoweredOff"))
    media = tmp_path / "media"
    media.mkdir()
    s.createvm(name="vm1", ostype="WindowsXP", register=True)
    running = s.createvm(name="busy", register=True)["uuid"]
    s.storagectl(vm="vm1", name="IDE Controller", add="ide", controller="PIIX4")
    s.storagectl(vm="busy", name="IDE Controller", add="ide")
    s.createmedium(filename=str(media / "disk.vdi"), size_mb=1)
    s.storageattach(vm="vm1", storagectl="IDE Controller", port=0, device=0, type="hdd",
                    medium=str(media / "disk.vdi"))
    s.createmedium(filename=str(media / "free.vdi"), size_mb=1)
    make_iso(media / "cd.iso")
    s.openmedium(kind="dvd", path=str(media / "cd.iso"))
    make_iso(media / "unregistered.iso")
    with open(media / "junk.bin", "wb") as f:
        f.write(b"not an image")
    os.makedirs(os.path.join(s.home, "Machines", "occupied"))
    states[running] = "Running"
    return s, str(media)


M = "{media}"
CASES = [
    # (op, fields, code, message: exact, or a prefix ending in "...")
    ("createvm", {"name": "vm1"}, FILE_ERROR, "Machine settings file '{home}/Machines/vm1/vm1.vbox' already exists"),
    ("createvm", {"name": "x", "ostype": "Windows99"}, OBJECT_NOT_FOUND, "Guest OS type 'Windows99' is invalid"),
    ("createvm", {"name": ""}, E_INVALIDARG, "Invalid machine name ''"),
    ("createvm", {"name": "evil\nVM 'x' Running"}, E_INVALIDARG,
     "Invalid machine name 'evil\\nVM 'x' Running'"),
    ("modifyvm", {"vm": "vm1", "changes": {"name": "a\x1b[2Jb"}}, E_INVALIDARG, "Invalid machine name 'a\\x1b[2Jb'"),
    ("createvm", {"name": "a/b"}, E_INVALIDARG, "Invalid machine name 'a/b'"),
    ("createvm", {"name": "vm1", "register": True, "basefolder": "{media}"}, INVALID_OBJECT_STATE,
     "A machine named 'vm1' is already registered"),
    ("registervm", {"path": "{media}/none.vbox"}, FILE_ERROR,
     "Could not find the settings file '{media}/none.vbox' (VERR_FILE_NOT_FOUND)"),
    ("registervm", {"path": "{home}/Machines/vm1/vm1.vbox"}, INVALID_OBJECT_STATE, "Registered machine with UUID {..."),
    ("registervm", {"path": "{media}/junk.bin"}, FILE_ERROR, "Settings file '{media}/junk.bin' is not valid XML..."),
    ("unregistervm", {"vm": "nobody"}, OBJECT_NOT_FOUND, "Could not find a registered machine named 'nobody'"),
    ("unregistervm", {"vm": "busy", "delete": True}, INVALID_VM_STATE,
     "Cannot unregister the machine 'busy' while it is locked"),
    ("modifyvm", {"vm": "nobody", "changes": {"memory": 64}}, OBJECT_NOT_FOUND,
     "Could not find a registered machine named 'nobody'"),
    ("modifyvm", {"vm": "00000000-0000-0000-0000-000000000000", "changes": {"memory": 64}}, OBJECT_NOT_FOUND,
     "Could not find a registered machine named '00000000-0000-0000-0000-000000000000'"),
    ("modifyvm", {"vm": "vm1", "changes": {}}, E_INVALIDARG, "Nothing to change: give at least one setting"),
    ("modifyvm", {"vm": "vm1", "changes": {"memory": 1}}, E_INVALIDARG,
     "Invalid RAM size: 1 MB (must be in range [4, 2097152] MB)"),
    ("modifyvm", {"vm": "vm1", "changes": {"memory": "lots"}}, E_INVALIDARG, "Invalid RAM size: lots MB..."),
    ("modifyvm", {"vm": "vm1", "changes": {"cpus": 0}}, E_INVALIDARG,
     "Invalid virtual CPU count: 0 (must be in range [1, 64])"),
    ("modifyvm", {"vm": "vm1", "changes": {"acpi": "maybe"}}, E_INVALIDARG, "Invalid value 'maybe' for 'acpi': expected on or off"),
    ("modifyvm", {"vm": "vm1", "changes": {"boot1": "usb"}}, E_INVALIDARG, "Invalid boot device 'usb'..."),
    ("modifyvm", {"vm": "vm1", "changes": {"nic3": "wifi"}}, E_INVALIDARG, "Invalid type 'wifi' specified for NIC 3..."),
    ("modifyvm", {"vm": "vm1", "changes": {"vrde_ports": "5000-"}}, E_INVALIDARG, "Invalid port range '5000-'..."),
    ("modifyvm", {"vm": "vm1", "changes": {"vrde_ports": "70000"}}, E_INVALIDARG, "Invalid port range '70000'..."),
    ("modifyvm", {"vm": "vm1", "changes": {"vrde_ports": "33a9"}}, E_INVALIDARG, "Invalid port range '33a9'..."),
    ("modifyvm", {"vm": "vm1", "changes": {"vrde_ports": "13395-13393"}}, E_INVALIDARG,
     "Invalid port range '13395-13393': '13395-13393' in the port list '13395-13393': a range goes from low to high..."),
    ("modifyvm", {"vm": "vm1", "changes": {"vrde_properties": {"Limits/MaxConnections": "0"}}}, E_INVALIDARG,
     "VRDE property Limits/MaxConnections '0' is not a whole number within 1..10000"),
    ("modifyvm", {"vm": "vm1", "changes": {"vrde_properties": {"TCP/Ports": "1,,2"}}}, E_INVALIDARG, "Invalid port range '1,,2'..."),
    ("modifyvm", {"vm": "vm1", "changes": {"vrde_auth_type": "pam"}}, E_INVALIDARG, "Invalid --vrdeauthtype argument 'pam'"),
    ("modifyvm", {"vm": "vm1", "changes": {"vrde_video_channel_quality": 5}}, E_INVALIDARG,
     "Invalid --vrdevideochannelquality argument '5' (must be in range [10, 100])"),
    ("modifyvm", {"vm": "vm1", "changes": {"vrde_properties": {"VideoChannel/Quality": "5"}}}, E_INVALIDARG,
     "Invalid VideoChannel/Quality '5' (must be in range [10, 100])"),
    ("modifyvm", {"vm": "vm1", "changes": {"teleporter_port": 65536}}, E_INVALIDARG, "Invalid port number 65536"),
    ("modifyvm", {"vm": "vm1", "changes": {"teleporter_password": "#SHA-512##abc"}}, E_INVALIDARG,
     "Cannot set an already hashed password, only plain text password please"),
    ("modifyvm", {"vm": "vm1", "changes": {"cpuid": {"zz": [1, 2, 3, 4]}}}, E_INVALIDARG, "Invalid CPUID leaf 'zz'..."),
    ("modifyvm", {"vm": "vm1", "changes": {"cpuid": {"1": [1, 2, 3]}}}, E_INVALIDARG, "Invalid CPUID values for leaf '1'..."),
    ("modifyvm", {"vm": "vm1", "changes": {"uart1": [0x3F8]}}, E_INVALIDARG, "Invalid --uart1 argument..."),
    ("modifyvm", {"vm": "vm1", "changes": {"uartmode1": ["tcp", "1234"]}}, E_INVALIDARG, "Invalid --uartmode1 argument..."),
    ("modifyvm", {"vm": "vm1", "changes": {"accel": "hvf"}}, E_INVALIDARG, "Invalid --accel argument 'hvf' (kvm, tcg or auto)"),
    ("modifyvm", {"vm": "vm1", "changes": {"ostype": "Amiga"}}, OBJECT_NOT_FOUND, "Guest OS type 'Amiga' is invalid"),
    ("modifyvm", {"vm": "vm1", "changes": {"name": "busy"}}, INVALID_OBJECT_STATE, "A machine named 'busy' is already registered"),
    ("modifyvm", {"vm": "vm1", "changes": {"name": "occupied", "memory": 64}}, FILE_ERROR,
     "Could not rename the directory '{home}/Machines/vm1' to '{home}/Machines/occupied'..."),
    ("modifyvm", {"vm": "vm1", "changes": {"bogus": 1}}, E_INVALIDARG, "Unknown setting 'bogus'"),
    # all or nothing: a good change next to a bad one is not applied either
    ("modifyvm", {"vm": "vm1", "changes": {"memory": 512, "cpus": 999}}, E_INVALIDARG, "Invalid virtual CPU count: 999..."),
    ("modifyvm", {"vm": "busy", "changes": {"memory": 512}}, INVALID_VM_STATE, "The machine is not mutable (state is Running)"),
    ("createmedium", {"filename": "{media}/disk.vdi", "size_mb": 1}, INVALID_OBJECT_STATE,
     "Could not create the medium storage unit '{media}/disk.vdi': a medium with this location is already registered"),
    ("createmedium", {"filename": "{media}/junk.bin", "size_mb": 1}, FILE_ERROR,
     "Could not create the medium storage unit '{media}/junk.bin'.  VD: cannot create image '{media}/junk.bin' (VERR_ALREADY_EXISTS)"),
    ("createmedium", {"filename": "{media}/new.vmdk", "size_mb": 1, "format": "VMDK"}, E_INVALIDARG,
     "Unsupported format 'VMDK': only VDI images can be created"),
    ("createmedium", {"filename": "{media}/new.vdi", "size_mb": 0}, E_INVALIDARG, "Invalid size '0'..."),
    ("createmedium", {"filename": "{media}/new.vdi", "size_mb": 1, "variant": "Split2G"}, E_INVALIDARG,
     "Invalid medium variant 'Split2G' (Standard or Fixed)"),
    ("createmedium", {"filename": "{media}/no/such/dir.vdi", "size_mb": 1}, FILE_ERROR,
     "Could not create the medium storage unit '{media}/no/such/dir.vdi'..."),
    ("createmedium", {"kind": "dvd", "filename": "{media}/new.iso", "size_mb": 1}, E_INVALIDARG,
     "Only disk images can be created (createmedium disk)"),
    ("openmedium", {"kind": "dvd", "path": "{media}/missing.iso"}, FILE_ERROR,
     "Could not find file for the medium '{media}/missing.iso' (VERR_FILE_NOT_FOUND)"),
    ("openmedium", {"kind": "dvd", "path": "{media}/junk.bin"}, FILE_ERROR, "VERR_VD_ISO_INVALID: ..."),
    ("openmedium", {"kind": "disk", "path": "{media}/cd.iso"}, E_INVALIDARG, "The medium '{media}/cd.iso' is registered as a DVD image"),
    ("openmedium", {"kind": "dvd", "path": "cd.iso"}, E_INVALIDARG,
     "The medium path 'cd.iso' is relative; give an absolute path"),
    ("createmedium", {"filename": "new.vdi", "size_mb": 1}, E_INVALIDARG,
     "The image path 'new.vdi' is relative; give an absolute path"),
    ("registervm", {"path": "vm1.vbox"}, E_INVALIDARG, "The settings file path 'vm1.vbox' is relative..."),
    ("createvm", {"name": "x", "basefolder": "vms"}, E_INVALIDARG, "The base folder path 'vms' is relative..."),
    ("modifyvm", {"vm": "vm1", "changes": {"uartmode1": ["file", "com1.log"]}}, E_INVALIDARG,
     "Invalid --uartmode1 argument..."),
    ("openmedium", {"kind": "floppy", "path": "{media}/cd.iso"}, E_INVALIDARG, "Invalid medium type 'floppy' (disk or dvd)"),
    ("closemedium", {"kind": "disk", "target": "{media}/disk.vdi"}, INVALID_OBJECT_STATE,
     "Medium '{media}/disk.vdi' cannot be closed because it is still attached to 1 virtual machines"),
    ("closemedium", {"kind": "disk", "target": "{media}/nothing.vdi"}, FILE_ERROR,
     "Could not find file for the medium '{media}/nothing.vdi' (VERR_FILE_NOT_FOUND)"),
    ("closemedium", {"kind": "dvd", "target": "{media}/free.vdi"}, E_INVALIDARG,
     "The medium '{media}/free.vdi' is registered as a hard disk"),
    ("closemedium", {"kind": "dvd", "target": "{media}/unregistered.iso", "delete": True}, E_INVALIDARG,
     "Only hard disk images can be deleted; close the DVD image without --delete"),
    ("closemedium", {"kind": "disk", "target": "{media}/unregistered.iso"}, FILE_ERROR,
     "'{media}/unregistered.iso' is a CD/DVD image (ISO 9660) and cannot be used as a hard disk"),
    ("closemedium", {"kind": "disk", "target": "99999999-2222-3333-4444-555555555555"}, OBJECT_NOT_FOUND,
     "Could not find a registered medium with UUID {99999999-2222-3333-4444-555555555555}"),
    ("closemedium", {"kind": "dvd", "target": "{media}/cd.iso", "delete": True}, E_INVALIDARG,
     "Only hard disk images can be deleted; close the DVD image without --delete"),
    ("storagectl", {"vm": "vm1", "name": "IDE Controller", "add": "ide"}, INVALID_OBJECT_STATE,
     "Storage controller named 'IDE Controller' already exists"),
    ("storagectl", {"vm": "vm1", "name": "IDE2", "add": "ide"}, INVALID_OBJECT_STATE, "Too many storage controllers of this type..."),
    ("storagectl", {"vm": "vm1", "name": "S", "add": "scsi"}, E_INVALIDARG, "Invalid --add argument 'scsi' (ide or sata)"),
    ("storagectl", {"vm": "vm1", "name": "S", "add": "sata", "controller": "PIIX4"}, E_INVALIDARG,
     "Invalid --controller argument 'PIIX4' for an SATA controller (IntelAhci)"),
    ("storagectl", {"vm": "vm1", "name": "Nope", "remove": True}, OBJECT_NOT_FOUND, "Could not find a storage controller named 'Nope'"),
    ("storagectl", {"vm": "busy", "name": "S", "add": "sata"}, INVALID_VM_STATE, "The machine is not mutable (state is Running)"),
    ("storageattach", {"vm": "vm1", "storagectl": "Nope", "port": 0, "device": 0, "type": "hdd", "medium": "{media}/free.vdi"},
     OBJECT_NOT_FOUND, "Could not find a storage controller named 'Nope'"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 0, "device": 1, "type": "hdd", "medium": "{media}/disk.vdi"},
     INVALID_OBJECT_STATE, "Medium '{media}/disk.vdi' is already attached to port 0, device 0 of controller 'IDE Controller' of this virtual machine"),
    ("storageattach", {"vm": "busy", "storagectl": "IDE Controller", "port": 0, "device": 0, "type": "hdd", "medium": "{media}/disk.vdi"},
     INVALID_VM_STATE, "The machine is not mutable (state is Running)"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 2, "device": 0, "type": "hdd", "medium": "{media}/free.vdi"},
     E_INVALIDARG, "Invalid port number 2 (must be in range [0, 1])"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 1, "device": 2, "type": "hdd", "medium": "{media}/free.vdi"},
     E_INVALIDARG, "Invalid device number 2 (must be in range [0, 1])"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 1, "device": 0, "type": "floppy", "medium": "{media}/free.vdi"},
     E_INVALIDARG, "Invalid --type argument 'floppy' (hdd or dvddrive)"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 1, "device": 0, "type": "hdd", "medium": "{media}/gone.vdi"},
     FILE_ERROR, "Could not find file for the medium '{media}/gone.vdi' (VERR_FILE_NOT_FOUND)"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 1, "device": 0, "type": "hdd", "medium": "{media}/cd.iso"},
     E_INVALIDARG, "The medium '{media}/cd.iso' is registered as a DVD image"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 1, "device": 0, "type": "hdd", "medium": "{media}/unregistered.iso"},
     FILE_ERROR, "'{media}/unregistered.iso' is a CD/DVD image (ISO 9660) and cannot be used as a hard disk"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 1, "device": 0, "type": "hdd", "medium": "emptydrive"},
     E_INVALIDARG, "--medium emptydrive is for DVD drives only (--type dvddrive)"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 1, "device": 1, "medium": "none"},
     OBJECT_NOT_FOUND, "No storage device attached to device slot 1 on port 1 of controller 'IDE Controller'"),
    ("storageattach", {"vm": "vm1", "storagectl": "IDE Controller", "port": 1, "device": 0, "type": "hdd",
                       "medium": "11111111-2222-3333-4444-555555555555"},
     OBJECT_NOT_FOUND, "Could not find a registered medium with UUID {11111111-2222-3333-4444-555555555555}"),
    ("storageattach", {"vm": "busy", "storagectl": "IDE Controller", "port": 0, "device": 0, "type": "hdd", "medium": "{media}/free.vdi"},
     INVALID_VM_STATE, "The machine is not mutable (state is Running)"),
    ("showvminfo", {"vm": "ghost"}, OBJECT_NOT_FOUND, "Could not find a registered machine named 'ghost'"),
    ("setextradata", {"target": "ghost", "key": "a", "value": "b"}, OBJECT_NOT_FOUND, "Could not find a registered machine named 'ghost'"),
    ("setextradata", {"target": "vm1", "key": "", "value": "b"}, E_INVALIDARG, "Give the extradata key"),
    ("setextradata", {"target": "vm1", "key": "k", "value": "bell\x07"}, E_INVALIDARG,
     "A name or value contains a control character, which a settings file cannot hold"),
    ("modifyvm", {"vm": "vm1", "changes": {"name": "tab\x01"}}, E_INVALIDARG, "Invalid machine name 'tab\\x01'"),
    ("getextradata", {"target": "ghost", "key": "a"}, OBJECT_NOT_FOUND, "Could not find a registered machine named 'ghost'"),
    ("setproperty", {"name": "colour", "value": "blue"}, E_INVALIDARG, "Invalid parameter 'colour'"),
    ("setproperty", {"name": "machinefolder", "value": "relative/dir"}, E_INVALIDARG,
     "The machine folder 'relative/dir' is not an absolute path"),
    ("list", {"what": "pets"}, E_INVALIDARG, "Unknown list type 'pets'..."),
]


@pytest.mark.parametrize("op,fields,code,message", CASES,
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_a_mistake_is_one_line_and_changes_nothing(world, op, fields, code, message):
    settings, media = world

    def fill(value):
        if isinstance(value, str):
            return value.replace("{media}", media).replace("{home}", settings.home)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    before = snapshot(settings.home, media)
    with pytest.raises(ManagerError) as err:
        getattr(settings, op)(**fill(fields))
    expected = fill(message)
    assert err.value.code == code
    assert "\n" not in err.value.message
    if expected.endswith("..."):
        assert err.value.message.startswith(expected[:-3]), err.value.message
    else:
        assert err.value.message == expected
    assert snapshot(settings.home, media) == before


def test_a_corrupt_settings_file_is_a_clear_error(world):
    settings, _media = world
    uuid = settings.vm_uuid("vm1")
    path = settings.showvminfo(vm="vm1")["settings_file"]
    with open(path, "wb") as f:
        f.write(b"<VirtualBox><Machine")
    assert settings.showvminfo(vm="busy")["name"] == "busy"      # the other VM still works
    assert {"name": "<inaccessible>", "uuid": uuid} in settings.list(what="vms")
    with pytest.raises(ManagerError) as err:
        settings.modifyvm(vm=uuid, changes={"memory": 64})
    assert err.value.code == FILE_ERROR
    assert err.value.message.startswith(f"Settings file '{path}' is not valid XML")
    # Looked up by name, it says why it is inaccessible and where the last good copy is.
    with pytest.raises(ManagerError) as err:
        settings.showvminfo(vm="vm1")
    assert err.value.message.startswith(f"The machine 'vm1' is inaccessible: Settings file '{path}' is not valid XML")
    assert err.value.message.endswith(f"; its previous version is '{path}-prev': copy it over '{path}' to recover")
    os.replace(path + "-prev", path)
    assert settings.showvminfo(vm="vm1")["name"] == "vm1"
    with open(path, "wb") as f:
        f.write(b"<VirtualBox><Machine")
    settings.unregistervm(vm=uuid)             # an inaccessible VM can still be unregistered
    assert [vm["name"] for vm in settings.list(what="vms")] == ["busy"]
