"""The OS type table: VirtualBox's ids in its order, consistent flags, and the values the spec's
examples depend on."""

import pytest

from services.manager import ostypes

REQUIRED = """Other Other_64 Windows31 Windows95 Windows98 WindowsMe WindowsNT4 Windows2000 WindowsXP
WindowsXP_64 Windows2003 Windows2003_64 WindowsVista WindowsVista_64 Windows2008 Windows2008_64
Windows7 Windows7_64 Windows8 Windows8_64 Windows81 Windows81_64 Windows2012_64 Windows10
Windows10_64 Windows2016_64 Windows2019_64 Windows11_64 Linux22 Linux24 Linux24_64 Linux26
Linux26_64 ArchLinux ArchLinux_64 Debian Debian_64 Fedora Fedora_64 Gentoo Gentoo_64 Mandriva
Mandriva_64 RedHat RedHat_64 OpenSUSE OpenSUSE_64 Oracle Oracle_64 Turbolinux Turbolinux_64 Ubuntu
Ubuntu_64 Xandros Xandros_64 Linux Linux_64 Solaris Solaris_64 Solaris11_64 FreeBSD FreeBSD_64
OpenBSD OpenBSD_64 NetBSD NetBSD_64 OS2Warp3 OS2Warp4 OS2Warp45 OS2eCS DOS Netware L4 QNX MacOS
MacOS_64""".split()  # noqa: SIM905 - a table to read, not a literal to maintain


def test_every_common_id_is_there_once():
    ids = [t.id for t in ostypes.OS_TYPES]
    assert len(ids) == len(set(ids)) and len(ids) >= 90
    assert set(REQUIRED) <= set(ids)
    assert ids[:3] == ["Other", "Other_64", "Windows31"]
    assert ids.index("WindowsXP") < ids.index("Linux26") < ids.index("Solaris") < ids.index("FreeBSD")


def test_rows_are_consistent():
    for t in ostypes.OS_TYPES:
        assert t.bits == (64 if t.id.endswith("_64") else 32), t.id
        assert t.family in ostypes.FAMILIES and t.family_description
        assert t.storage_bus in ("IDE", "SATA") and t.ram_mb >= 8 and t.vram_mb >= 4 and t.disk_mb >= 500
        assert t.nic in ("Am79C973", "I82540EM", "I82543GC", "I82545EM")
        if t.bits == 64:
            assert t.ioapic, t.id
        if t.family == "Linux":
            assert t.rtc_utc, t.id


@pytest.mark.parametrize("os_id,ram,vram,disk_gb,bus,nic,family", [
    ("WindowsXP", 192, 16, 10, "IDE", "I82543GC", "Windows"),
    ("Windows7", 1024, 16, 32, "SATA", "I82540EM", "Windows"),
    ("Debian_64", 1024, 16, 8, "SATA", "I82540EM", "Linux"),
    ("Other", 64, 4, 2, "IDE", "Am79C973", "Other"),
    ("MacOS_64", 2048, 16, 20, "SATA", "I82545EM", "MacOS"),
])
def test_values_of_well_known_types(os_id, ram, vram, disk_gb, bus, nic, family):
    t = ostypes.find(os_id)
    assert (t.ram_mb, t.vram_mb, t.disk_mb, t.storage_bus, t.nic, t.family) == (ram, vram, disk_gb * 1024, bus, nic, family)


def test_find_ignores_case_and_refuses_unknown_ids():
    assert ostypes.find("windowsxp").id == "WindowsXP"
    assert ostypes.find("Windows99") is None and ostypes.find("") is None
    row = ostypes.find("Ubuntu_64").as_dict()
    assert row["id"] == "Ubuntu_64" and row["description"] == "Ubuntu (64-bit)"
    assert row["family_description"] == "Linux" and row["bits"] == 64
