"""Builds the bus of a PC's platform devices, the part the vCPU process hosts itself: debug console,
RTC/CMOS, fw_cfg, PCI configuration with the i440FX/PIIX functions, reset lines, 8042, ACPI PM."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Callable, Sequence

from services.hw.bus import Bus, PioWindows
from services.hw.chipset import cmos, debug_exit, debugcon, fw_cfg, pci, piix
from services.hw.chipset import reset as reset_lines
from services.hw.chipset.intx import IntxRouter
from services.hw.input import i8042 as kbc
from services.hw.input.ps2 import Ps2Keyboard

HOST_BRIDGE_SLOT = 0


def build_platform(memory, *, reset: Callable[[], None], poweroff: Callable[[], None], cpus: int = 1,
                   boot_order: Sequence[str] = ("floppy", "dvd", "disk"),
                   debug_sink: Callable[[bytes], None] | None = None,
                   uuid: uuidlib.UUID | str | None = None, boot_menu: bool = False,
                   boot_paths: Sequence[str] = (), on_pam_change: Callable[[bytes], None] | None = None,
                   clock: Callable[[], float] = time.time, utc: bool = True,
                   exit_port: int | None = None, fallback=None,
                   set_irq: Callable[[int, bool], None] | None = None, acpi: bool = False,
                   mouse: bool = True, on_keyboard_leds: Callable[[int], None] | None = None,
                   clock_ns: Callable[[], int] = time.monotonic_ns) -> Bus:
    """The platform of one VM over `memory` (a GuestMemory).

    `reset` and `poweroff` are called from inside a guest port write (on the vCPU thread): they
    should ask the engine to stop (StopReason.RESET / POWEROFF), not tear anything down.
    `exit_port` adds the test-exit device (tests/guests programs). Devices are found again with
    bus.device(name): debugcon, cmos, fw_cfg, pci (its .root holds the PCI functions), port92,
    reset-control, debug-exit. `fallback` (an IoBus, normally the io channel to the device
    process) receives every access no platform device claims.

    `set_irq(line, level)` (the engine's) receives the 8042's IRQ1/IRQ12 and the SCI; without it
    the devices work by polling. The 8042 ("i8042" at 0x60, "i8042-command" at 0x64) always has a
    PS/2 keyboard (`on_keyboard_leds` hears its LEDs) and, if `mouse`, a PS/2 mouse; host input
    goes to bus.device("i8042").keyboard.key(...) / .mouse.mouse(...). The PIIX3 ISA bridge is
    at 00:01.0 (its pci_irq(slot, pin) gives a PCI function's ISA IRQ); PCI cards raise their
    INTx pins through bus.device("pci").root.interrupts (an IntxRouter). `acpi` adds the PIIX4 PM
    function at 00:01.3, which makes SeaBIOS build ACPI tables: "apm" (0xB2-0xB3, its .pm is the
    function: power_button()), "gpe0" (0xAFE0), and the PM1 block wherever the guest puts PMBA,
    served behind the bus by a PioWindows layer; `poweroff` runs when the guest enters S5 and
    `clock_ns` paces the PM timer."""
    windows = PioWindows(fallback) if acpi else None
    bus = Bus(windows if acpi else fallback)

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
    isa_bridge = piix.Piix3IsaBridge()
    root.add(isa_bridge, piix.ISA_BRIDGE_SLOT, piix.ISA_BRIDGE_FUNCTION)
    root.interrupts = IntxRouter(isa_bridge.pci_irq, set_irq)
    isa_bridge.on_route_change = root.interrupts.reroute
    if acpi:
        def move_pm(old: int | None, new: int | None) -> None:
            windows.move("piix4-pm", new, piix.PM_IO_SIZE, pm.pm_read, pm.pm_write)

        pm = piix.Piix4Pm(irq=set_irq, poweroff=poweroff, clock_ns=clock_ns, on_io_move=move_pm)
        root.add(pm, piix.ISA_BRIDGE_SLOT, piix.PM_FUNCTION)
        bus.register(piix.ApmControl(pm), "pio", piix.APM_PORT, 2)
        bus.register(pm.gpe0, "pio", piix.GPE0_PORT, piix.GPE0_LENGTH)
    bus.register(pci.PciConfigIo(root), "pio", pci.CONFIG_ADDRESS_PORT, 8)
    bus.register(reset_lines.ResetControl(reset), "pio", reset_lines.RESET_CONTROL_PORT, 1, overlay=True)
    bus.register(reset_lines.SystemControlPortA(reset), "pio", reset_lines.PORT_A, 1)

    controller = kbc.I8042(irq=set_irq, reset=reset, keyboard=Ps2Keyboard(on_keyboard_leds), mouse=mouse)
    bus.register(controller, "pio", kbc.DATA_PORT, 1)
    bus.register(controller.command_port, "pio", kbc.COMMAND_PORT, 1)

    if exit_port is not None:
        bus.register(debug_exit.DebugExit(poweroff), "pio", exit_port, 1)
    return bus
