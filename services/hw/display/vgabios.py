"""SeaVGABIOS for the std VGA, as Debian ships it, and the fw_cfg names SeaBIOS looks it up by
(prefer the PCI-bound name: only then does the VGA BIOS find the LFB in BAR0 and EDID in BAR2)."""

from __future__ import annotations

VGABIOS_PATH = "/usr/share/seabios/vgabios-stdvga.bin"
# SeaBIOS runs `pci1234,1111.rom` as the option ROM of our PCI function, handing it the function's
# address; a `vgaroms/` file runs unbound, and SeaVGABIOS then assumes the LFB sits at 0xE0000000.
FW_CFG_PCI_ROM = "pci1234,1111.rom"
FW_CFG_VGAROM = "vgaroms/vgabios-stdvga.bin"


class VgaBiosError(RuntimeError):
    pass


def load_vgabios(path: str = VGABIOS_PATH) -> bytes:
    """The ROM image, checked for the option-ROM signature; a clear error if it is missing."""
    try:
        with open(path, "rb") as f:
            rom = f.read()
    except FileNotFoundError:
        raise VgaBiosError(f"the VGA BIOS {path} is missing: install Debian's 'seabios' package") from None
    except OSError as e:
        raise VgaBiosError(f"cannot read the VGA BIOS {path}: {e.strerror}") from None
    if len(rom) < 512 or rom[:2] != b"\x55\xaa":
        raise VgaBiosError(f"{path} is not an option ROM (no 55 AA signature)")
    return rom


def install_vgabios(fw_cfg, rom: bytes | None = None, *, bound_to_pci: bool = True) -> str:
    """Add the ROM to `fw_cfg` (a FwCfg) under the name SeaBIOS uses; returns that name."""
    name = FW_CFG_PCI_ROM if bound_to_pci else FW_CFG_VGAROM
    fw_cfg.add_file(name, load_vgabios() if rom is None else rom)
    return name
