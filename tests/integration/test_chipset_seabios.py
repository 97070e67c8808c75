"""Debian's SeaBIOS on tcg with the 8042, PIIX3 ISA bridge and (acpi) PIIX4 PM: it finds the
keyboard, takes a key typed through IRQ1 into its keyboard buffer, and builds ACPI tables."""

import threading
import time

from services.hw.memory import GuestMemory, MiB
from services.ipc.shm import PrivateRegion
from services.vcpu.engine import StopReason, create_engine
from services.vcpu.platform import build_platform

SEABIOS = "/usr/share/seabios/bios.bin"
END_OF_POST = b"No bootable device."
KEYBOARD_READY = b"PS2 keyboard initialized"
KEY_A = 0x1E
BDA_KBD_HEAD, BDA_KBD_TAIL = 0x41A, 0x41C       # offsets into the BIOS data area's key ring (0x400)


def boot(*, acpi: bool = False, type_key: int | None = None,
         timeout: float = 60.0) -> tuple[str, GuestMemory]:
    with open(SEABIOS, "rb") as f:
        memory = GuestMemory(PrivateRegion(128 * MiB), f.read())
    memory.load_firmware_shadow()
    output = bytearray()
    engine = None
    bus = build_platform(memory, debug_sink=output.extend, acpi=acpi,
                         set_irq=lambda line, level: engine.set_irq(line, level),
                         reset=lambda: engine.request_stop(StopReason.RESET),
                         poweroff=lambda: engine.request_stop(StopReason.POWEROFF))
    engine = create_engine("tcg", memory, bus, 1)
    keyboard = bus.device("i8042").keyboard
    start = time.monotonic()
    done = threading.Event()

    def key_stored() -> bool:
        return memory.read(BDA_KBD_HEAD, 2) != memory.read(BDA_KBD_TAIL, 2)

    def watch():
        typed_at = None
        while time.monotonic() - start < timeout:
            if type_key is not None and typed_at is None and KEYBOARD_READY in output:
                # Typed on another thread than the vCPU's, as RDP input arrives.
                keyboard.key(type_key, pressed=True)
                keyboard.key(type_key, pressed=False)
                typed_at = time.monotonic()
            waiting_for_key = typed_at is not None and not key_stored() and time.monotonic() - typed_at < 5
            if END_OF_POST in output and not waiting_for_key and (type_key is None or typed_at):
                break
            time.sleep(0.001)
        done.set()
        engine.request_stop(StopReason.PAUSED)

    threading.Thread(target=watch, daemon=True).start()
    try:
        reason = engine.run()
    finally:
        done.wait(5)
        engine.close()
    text = output.decode("latin-1")
    assert reason == StopReason.PAUSED, f"the engine stopped early: {reason}\n{text}"
    assert END_OF_POST.decode() in text, text
    return text, memory


def test_seabios_finds_the_ps2_keyboard_and_the_isa_bridge():
    text, _ = boot()
    assert "Timeout at i8042_flush" not in text
    assert "PS2 keyboard initialized" in text
    assert "PCI: init bdf=00:01.0 id=8086:7000" in text
    assert "PIIX3/PIIX4 init: elcr=00 0c" in text                # PIRQs routed to IRQ 10, 11
    assert "ACPI" not in text                                  # no PM function, no tables


def test_a_key_reaches_the_bios_keyboard_buffer_through_irq1():
    _, memory = boot(type_key=KEY_A)
    head = int.from_bytes(memory.read(BDA_KBD_HEAD, 2), "little")
    tail = int.from_bytes(memory.read(BDA_KBD_TAIL, 2), "little")
    assert tail != head, "SeaBIOS's INT 9 handler stored no key"
    # Scan code 0x1E (translated back from set 2 by XLATE) with its ASCII 'a'.
    assert memory.read(0x400 + head, 2) == bytes((ord("a"), KEY_A))


def test_seabios_builds_acpi_tables_with_the_pm_function():
    text, _ = boot(acpi=True)
    assert "PCI: init bdf=00:01.3 id=8086:7113" in text
    assert "Using pmtimer, ioport 0xb008" in text              # our PM timer paces SeaBIOS
    assert "ACPI DSDT=" in text
    assert "Copying ACPI RSDP from" in text
    assert "PS2 keyboard initialized" in text
