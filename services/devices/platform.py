"""Builds the bus of a PC's register-only platform devices, the part the vCPU process hosts itself:
debug console, RTC/CMOS, fw_cfg, PCI configuration with the i440FX host bridge, reset lines."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Callable, Sequence

from services.devices.bus import Bus
from services.devices.chipset import cmos, debug_exit, debugcon, fw_cfg, pci, reset as reset_lines

HOST_BRIDGE_SLOT = 0


def build_platform(memory, *, reset: Callable[[], None], poweroff: Callable[[], None], cpus: int = 1,
                   boot_order: Sequence[str] = ("floppy", "dvd", "disk"),
                   debug_sink: Callable[[bytes], None] | None = None,
                   uuid: uuidlib.UUID | str | None = None, boot_menu: bool = False,
                   boot_paths: Sequence[str] = (), on_pam_change: Callable[[bytes], None] | None = None,
                   clock: Callable[[], float] = time.time, utc: bool = True,
                   exit_port: int | None = None, fallback=None) -> Bus:
    """The platform of one VM over `memory` (a GuestMemory).

    `reset` and `poweroff` are called from inside a guest port write (on the vCPU thread): they
    should ask the engine to stop (StopReason.RESET / POWEROFF), not tear anything down.
    `exit_port` adds the test-exit device (tests/guests programs). Devices are found again with
    bus.device(name): debugcon, cmos, fw_cfg, pci (its .root holds the PCI functions), port92,
    reset-control, debug-exit. `fallback` (an IoBus, normally the io channel to the device
    process) receives every access no platform device claims."""
    bus = Bus(fallback)

    console = debugcon.DebugConsole(debug_sink)
    bus.register(console, "pio", debugcon.SEABIOS_PORT, 1, name="debugcon")
    bus.register(console, "pio", debugcon.BOCHS_PORT, 1)

    rtc = cmos.Cmos(ram_below_4g=memory.lowmem_end, ram_above_4g=memory.highmem_size, cpus=cpus,
                    boot_order=boot_order, clock=clock, utc=utc)
    bus.register(rtc, "pio", cmos.INDEX_PORT, 2, name="cmos")

    config = fw_cfg.build_fw_cfg(memory, cpus=cpus, uuid=uuid, boot_menu=boot_menu, boot_paths=boot_paths)
    bus.register(config, "pio", fw_cfg.BASE_PORT, fw_cfg.PORT_COUNT, name="fw_cfg")

    root = pci.PciRoot()
    root.add(pci.I440fxHostBridge(on_pam_change), HOST_BRIDGE_SLOT)
    bus.register(pci.PciConfigIo(root), "pio", pci.CONFIG_ADDRESS_PORT, 8)
    bus.register(reset_lines.ResetControl(reset), "pio", reset_lines.RESET_CONTROL_PORT, 1, overlay=True)
    bus.register(reset_lines.SystemControlPortA(reset), "pio", reset_lines.PORT_A, 1)

    if exit_port is not None:
        bus.register(debug_exit.DebugExit(poweroff), "pio", exit_port, 1)
    return bus
