"""VirtualBox's guest OS types: the ids `createvm --ostype` accepts and the defaults each implies,
in the order `VBoxManage list ostypes` prints them (after VirtualBox 6.1's Global::sOSTypes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

FAMILIES = {
    "Other": "Other",
    "Windows": "Microsoft Windows",
    "Linux": "Linux",
    "Solaris": "Solaris",
    "BSD": "BSD",
    "OS2": "IBM OS/2",
    "MacOS": "Mac OS X",
}


@dataclass(frozen=True)
class OsType:
    id: str
    description: str
    family: str
    bits: int               # 32 or 64
    ram_mb: int
    vram_mb: int
    disk_mb: int
    storage_bus: str        # the recommended hard disk bus: IDE or SATA
    nic: str                # the recommended network adapter type
    audio: str
    ioapic: bool
    rtc_utc: bool

    @property
    def family_description(self) -> str:
        return FAMILIES[self.family]

    def as_dict(self) -> dict:
        return {**asdict(self), "family_description": self.family_description}


# Row: id, description, family, RAM MB, VRAM MB, disk GB, disk bus, NIC, audio, hints.
# Hints: 64 = 64-bit (implies an I/O APIC as in VirtualBox), IO = I/O APIC, UTC = RTC in UTC.
_G = 1024
_ROWS = (
    ("Other", "Other/Unknown", "Other", 64, 4, 2 * _G, "IDE", "Am79C973", "AC97", ""),
    ("Other_64", "Other/Unknown (64-bit)", "Other", 64, 4, 2 * _G, "IDE", "Am79C973", "AC97", "64"),
    ("Windows31", "Windows 3.1", "Windows", 32, 4, 1 * _G, "IDE", "Am79C973", "SB16", ""),
    ("Windows95", "Windows 95", "Windows", 64, 4, 2 * _G, "IDE", "Am79C973", "SB16", ""),
    ("Windows98", "Windows 98", "Windows", 64, 4, 2 * _G, "IDE", "Am79C973", "SB16", ""),
    ("WindowsMe", "Windows ME", "Windows", 128, 4, 4 * _G, "IDE", "Am79C973", "AC97", ""),
    ("WindowsNT3x", "Windows NT 3.x", "Windows", 64, 8, 1 * _G, "IDE", "Am79C973", "SB16", ""),
    ("WindowsNT4", "Windows NT 4", "Windows", 128, 16, 2 * _G, "IDE", "Am79C973", "SB16", ""),
    ("Windows2000", "Windows 2000", "Windows", 168, 16, 4 * _G, "IDE", "Am79C973", "AC97", ""),
    ("WindowsXP", "Windows XP (32-bit)", "Windows", 192, 16, 10 * _G, "IDE", "I82543GC", "AC97", ""),
    ("WindowsXP_64", "Windows XP (64-bit)", "Windows", 512, 16, 10 * _G, "IDE", "I82540EM", "AC97", "64"),
    ("Windows2003", "Windows 2003 (32-bit)", "Windows", 512, 16, 20 * _G, "IDE", "I82543GC", "AC97", ""),
    ("Windows2003_64", "Windows 2003 (64-bit)", "Windows", 512, 16, 20 * _G, "IDE", "I82540EM", "AC97", "64"),
    ("WindowsVista", "Windows Vista (32-bit)", "Windows", 512, 16, 25 * _G, "SATA", "I82540EM", "HDA", ""),
    ("WindowsVista_64", "Windows Vista (64-bit)", "Windows", 512, 16, 25 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("Windows2008", "Windows 2008 (32-bit)", "Windows", 1024, 16, 32 * _G, "SATA", "I82540EM", "HDA", ""),
    ("Windows2008_64", "Windows 2008 (64-bit)", "Windows", 2048, 16, 32 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("Windows7", "Windows 7 (32-bit)", "Windows", 1024, 16, 32 * _G, "SATA", "I82540EM", "HDA", ""),
    ("Windows7_64", "Windows 7 (64-bit)", "Windows", 2048, 16, 32 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("Windows8", "Windows 8 (32-bit)", "Windows", 1024, 128, 25 * _G, "SATA", "I82540EM", "HDA", "IO"),
    ("Windows8_64", "Windows 8 (64-bit)", "Windows", 2048, 128, 25 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("Windows81", "Windows 8.1 (32-bit)", "Windows", 1024, 128, 25 * _G, "SATA", "I82540EM", "HDA", "IO"),
    ("Windows81_64", "Windows 8.1 (64-bit)", "Windows", 2048, 128, 25 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("Windows2012_64", "Windows 2012 (64-bit)", "Windows", 2048, 128, 25 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("Windows10", "Windows 10 (32-bit)", "Windows", 1024, 128, 32 * _G, "SATA", "I82540EM", "HDA", "IO"),
    ("Windows10_64", "Windows 10 (64-bit)", "Windows", 2048, 128, 50 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("Windows2016_64", "Windows 2016 (64-bit)", "Windows", 2048, 128, 50 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("Windows2019_64", "Windows 2019 (64-bit)", "Windows", 2048, 128, 50 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("Windows11_64", "Windows 11 (64-bit)", "Windows", 4096, 128, 80 * _G, "SATA", "I82540EM", "HDA", "64"),
    ("WindowsNT", "Other Windows (32-bit)", "Windows", 512, 16, 20 * _G, "IDE", "Am79C973", "AC97", ""),
    ("WindowsNT_64", "Other Windows (64-bit)", "Windows", 512, 16, 20 * _G, "IDE", "I82540EM", "AC97", "64"),
    ("Linux22", "Linux 2.2", "Linux", 64, 4, 2 * _G, "IDE", "Am79C973", "AC97", "UTC"),
    ("Linux24", "Linux 2.4 (32-bit)", "Linux", 128, 16, 8 * _G, "IDE", "Am79C973", "AC97", "UTC"),
    ("Linux24_64", "Linux 2.4 (64-bit)", "Linux", 1024, 16, 16 * _G, "IDE", "I82540EM", "AC97", "64 UTC"),
    ("Linux26", "Linux 2.6 / 3.x / 4.x (32-bit)", "Linux", 512, 16, 8 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("Linux26_64", "Linux 2.6 / 3.x / 4.x (64-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("ArchLinux", "Arch Linux (32-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("ArchLinux_64", "Arch Linux (64-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("Debian", "Debian (32-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("Debian_64", "Debian (64-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("Fedora", "Fedora (32-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("Fedora_64", "Fedora (64-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("Gentoo", "Gentoo (32-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("Gentoo_64", "Gentoo (64-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("Mandriva", "Mandriva (32-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("Mandriva_64", "Mandriva (64-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("RedHat", "Red Hat (32-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("RedHat_64", "Red Hat (64-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("OpenSUSE", "openSUSE (32-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("OpenSUSE_64", "openSUSE (64-bit)", "Linux", 1024, 16, 8 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("Oracle", "Oracle (32-bit)", "Linux", 1024, 16, 12 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("Oracle_64", "Oracle (64-bit)", "Linux", 1024, 16, 12 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("Turbolinux", "Turbolinux (32-bit)", "Linux", 384, 16, 8 * _G, "IDE", "I82540EM", "AC97", "UTC"),
    ("Turbolinux_64", "Turbolinux (64-bit)", "Linux", 384, 16, 8 * _G, "IDE", "I82540EM", "AC97", "64 UTC"),
    ("Ubuntu", "Ubuntu (32-bit)", "Linux", 1024, 16, 10 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("Ubuntu_64", "Ubuntu (64-bit)", "Linux", 1024, 16, 10 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("Xandros", "Xandros (32-bit)", "Linux", 256, 16, 8 * _G, "IDE", "I82540EM", "AC97", "UTC"),
    ("Xandros_64", "Xandros (64-bit)", "Linux", 256, 16, 8 * _G, "IDE", "I82540EM", "AC97", "64 UTC"),
    ("Linux", "Other Linux (32-bit)", "Linux", 256, 16, 8 * _G, "IDE", "I82540EM", "AC97", "UTC"),
    ("Linux_64", "Other Linux (64-bit)", "Linux", 512, 16, 8 * _G, "IDE", "I82540EM", "AC97", "64 UTC"),
    ("Solaris", "Oracle Solaris 10 5/09 and earlier (32-bit)", "Solaris", 768, 16, 16 * _G, "IDE", "I82540EM", "AC97", "UTC"),
    ("Solaris_64", "Oracle Solaris 10 5/09 and earlier (64-bit)", "Solaris", 1536, 16, 16 * _G, "IDE", "I82540EM", "AC97", "64 UTC"),
    ("Solaris10U8_or_later", "Oracle Solaris 10 10/09 and later (32-bit)", "Solaris", 768, 16, 16 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("Solaris10U8_or_later_64", "Oracle Solaris 10 10/09 and later (64-bit)", "Solaris", 1536, 16, 16 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("OpenSolaris", "Oracle Solaris 11 (32-bit)", "Solaris", 768, 16, 16 * _G, "SATA", "I82540EM", "AC97", "UTC"),
    ("OpenSolaris_64", "Oracle Solaris 11 (64-bit)", "Solaris", 1536, 16, 16 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("Solaris11_64", "Oracle Solaris 11 (64-bit)", "Solaris", 4096, 16, 32 * _G, "SATA", "I82540EM", "AC97", "64 UTC"),
    ("FreeBSD", "FreeBSD (32-bit)", "BSD", 1024, 16, 2 * _G, "IDE", "I82540EM", "AC97", ""),
    ("FreeBSD_64", "FreeBSD (64-bit)", "BSD", 1024, 16, 16 * _G, "IDE", "I82540EM", "AC97", "64"),
    ("OpenBSD", "OpenBSD (32-bit)", "BSD", 1024, 16, 16 * _G, "IDE", "I82540EM", "AC97", ""),
    ("OpenBSD_64", "OpenBSD (64-bit)", "BSD", 1024, 16, 16 * _G, "IDE", "I82540EM", "AC97", "64"),
    ("NetBSD", "NetBSD (32-bit)", "BSD", 1024, 16, 16 * _G, "IDE", "I82540EM", "AC97", ""),
    ("NetBSD_64", "NetBSD (64-bit)", "BSD", 1024, 16, 16 * _G, "IDE", "I82540EM", "AC97", "64"),
    ("OS21x", "OS/2 1.x", "OS2", 8, 4, 500, "IDE", "Am79C973", "SB16", ""),
    ("OS2Warp3", "OS/2 Warp 3", "OS2", 48, 4, 1 * _G, "IDE", "Am79C973", "SB16", ""),
    ("OS2Warp4", "OS/2 Warp 4", "OS2", 64, 4, 2 * _G, "IDE", "Am79C973", "SB16", ""),
    ("OS2Warp45", "OS/2 Warp 4.5", "OS2", 128, 4, 2 * _G, "IDE", "Am79C973", "SB16", ""),
    ("OS2eCS", "eComStation", "OS2", 256, 4, 2 * _G, "IDE", "Am79C973", "AC97", ""),
    ("OS2ArcaOS", "ArcaOS", "OS2", 1024, 4, 4 * _G, "IDE", "I82540EM", "AC97", ""),
    ("OS2", "Other OS/2", "OS2", 96, 4, 2 * _G, "IDE", "Am79C973", "SB16", ""),
    ("MacOS", "Mac OS X (32-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "IO UTC"),
    ("MacOS_64", "Mac OS X (64-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "64 UTC"),
    ("MacOS106", "Mac OS X 10.6 Snow Leopard (32-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "IO UTC"),
    ("MacOS106_64", "Mac OS X 10.6 Snow Leopard (64-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "64 UTC"),
    ("MacOS107_64", "Mac OS X 10.7 Lion (64-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "64 UTC"),
    ("MacOS108_64", "Mac OS X 10.8 Mountain Lion (64-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "64 UTC"),
    ("MacOS109_64", "Mac OS X 10.9 Mavericks (64-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "64 UTC"),
    ("MacOS1010_64", "Mac OS X 10.10 Yosemite (64-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "64 UTC"),
    ("MacOS1011_64", "Mac OS X 10.11 El Capitan (64-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "64 UTC"),
    ("MacOS1012_64", "macOS 10.12 Sierra (64-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "64 UTC"),
    ("MacOS1013_64", "macOS 10.13 High Sierra (64-bit)", "MacOS", 2048, 16, 20 * _G, "SATA", "I82545EM", "HDA", "64 UTC"),
    ("DOS", "DOS", "Other", 32, 4, 500, "IDE", "Am79C973", "SB16", ""),
    ("Netware", "Netware", "Other", 512, 4, 4 * _G, "IDE", "Am79C973", "AC97", ""),
    ("L4", "L4", "Other", 64, 4, 2 * _G, "IDE", "Am79C973", "AC97", ""),
    ("QNX", "QNX", "Other", 512, 4, 4 * _G, "IDE", "Am79C973", "AC97", ""),
    ("JRockitVE", "JRockitVE", "Other", 1024, 4, 8 * _G, "IDE", "I82545EM", "AC97", "IO"),
    ("VBoxBS_64", "VirtualBox Bootsector Test (64-bit)", "Other", 128, 4, 2 * _G, "IDE", "I82545EM", "AC97", "64"),
)


def _build(row) -> OsType:
    os_id, description, family, ram, vram, disk, bus, nic, audio, hints = row
    flags = hints.split()
    bits = 64 if "64" in flags else 32
    return OsType(os_id, description, family, bits, ram, vram, disk, bus, nic, audio,
                  ioapic=bits == 64 or "IO" in flags, rtc_utc="UTC" in flags)


OS_TYPES: tuple[OsType, ...] = tuple(_build(row) for row in _ROWS)
_BY_ID = {t.id.lower(): t for t in OS_TYPES}


def find(os_id: str) -> OsType | None:
    """The OS type with this id, or None; ids compare without case as in VirtualBox."""
    return _BY_ID.get(str(os_id).lower())
