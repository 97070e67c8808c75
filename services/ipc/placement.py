"""Which process hosts each device model of services/hw: the one place this is decided.

A round trip between two of our processes costs 40-90 µs, a call inside one ~0.2 µs
(bench/RESULTS.md §3). So a model whose registers the guest touches on hot paths sits beside the
vCPUs, and the device process hosts the models that move data to and from backends (disk images,
files): a command there is a few register accesses, then DMA into shared guest RAM and an interrupt.
tests/unit/test_layering.py checks that each process imports exactly the models placed in it."""

from __future__ import annotations

from dataclasses import dataclass

VCPU, DEVICES = "vcpu", "devices"


@dataclass(frozen=True)
class Placement:
    model: str                  # module under services.hw
    processes: tuple[str, ...]  # two: the vCPU process keeps a replica that answers reads locally
    why: str


PLACEMENTS = (
    Placement("interrupts.irqchip", (VCPU,), "LAPIC, IO-APIC, PIC and PIT take part in every "
              "interrupt and timer tick"),
    Placement("chipset.pci", (VCPU,), "the guest reads configuration space thousands of times at boot"),
    Placement("chipset.intx", (VCPU,), "PCI interrupt lines follow the PIIX3's routing registers, "
              "which live here"),
    Placement("chipset.piix", (VCPU,), "PIIX3 ISA bridge and ACPI PM: the PM timer is read in busy loops"),
    Placement("chipset.cmos", (VCPU,), "the RTC is read on every clock query of the firmware"),
    Placement("chipset.fw_cfg", (VCPU,), "SeaBIOS reads its ROMs and tables through it at boot"),
    Placement("chipset.reset", (VCPU,), "a reset stops the vCPUs, which live here"),
    Placement("chipset.debugcon", (VCPU,), "the firmware's log, one port write per character"),
    Placement("chipset.debug_exit", (VCPU,), "test programs end the VM through it"),
    Placement("input.i8042", (VCPU,), "the guest's keyboard handler reads it several times per key; "
              "input arrives from the RDP server on the input channel"),
    Placement("input.ps2", (VCPU,), "the keyboard and mouse behind the i8042"),
    Placement("display.vga", (VCPU,), "SeaVGABIOS's mode set alone is ~20,000 port accesses"),
    Placement("display.lfb", (VCPU,), "the linear framebuffer is guest RAM mapped into the vCPUs"),
    Placement("display.vgabios", (VCPU,), "the option ROM goes in through fw_cfg"),
    Placement("display.text", (VCPU,), "reads the text screen out of VRAM (the screen-text request)"),
    Placement("display.surface", (VCPU,), "renders VRAM into the shared surface the RDP server reads"),
    Placement("storage.ide.pci", (VCPU, DEVICES), "configuration space: the vCPU process's replica "
              "answers reads, writes also reach the device process, whose copy places the I/O ports"),
    Placement("storage.ide.controller", (DEVICES,), "ATA/ATAPI commands and bus-master DMA: a few "
              "register accesses, then blocking image I/O and DMA into shared guest RAM"),
    Placement("storage.ide.disk", (DEVICES,), "reads and writes the disk image"),
    Placement("storage.atapi", (DEVICES,), "reads the ISO image"),
    Placement("serial", (DEVICES,), "the 16550 UARTs' output goes to files"),
    Placement("net.e1000", (VCPU,), "the driver reads and writes several registers per interrupt; "
              "frames reach the NAT in the device process through shared rings, not round trips"),
    Placement("net.pcnet", (VCPU,), "pcnet32 selects and reads CSRs through RAP/RDP on every "
              "interrupt; frames go through the same rings"),
    Placement("net.virtio", (VCPU,), "the queue notify and ISR registers are touched per batch "
              "and per interrupt; frames go through the same rings"),
)


def placed_in(process: str) -> set[str]:
    """The services.hw modules the process hosts."""
    return {p.model for p in PLACEMENTS if process in p.processes}
