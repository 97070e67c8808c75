"""Interrupt controllers and timers of a PC (8259 pair, 8254 PIT, local APIC, IO-APIC), as the
software accelerator hosts them beside its processor; KVM has its own in the kernel."""
