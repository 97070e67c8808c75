"""What both ends of a move of a VM's state compare: the teleport's source and target, a saved state
and the VM that restores it. A guest runs on only where its hardware is the same."""

from __future__ import annotations

from services.hw import cpuid

# What must be equal on both ends, and how a difference reads.
CHECKED = {
    "accel": "accelerator",
    "memory_mib": "RAM (MiB)",
    "cpus": "processors",
    "acpi": "ACPI",
    "ide_controller": "IDE controller",
    "drives": "attached media",
    "nics": "network adapters",
}


def config_mismatch(source: dict, target: dict) -> str | None:
    """The first difference between the two ends' hardware, as VirtualBox's SSM words it."""
    if source.get("accel") != target.get("accel"):
        return (f"The source runs on the {source.get('accel')} accelerator and the target on "
                f"{target.get('accel')}: both ends must use the same accelerator")
    for key, what in CHECKED.items():
        # A state written before adapters were emulated had none.
        ours, theirs = (source.get(key, []), target.get(key, [])) if key == "nics" else (source.get(key), target.get(key))
        if ours != theirs:
            return f"Config mismatch - {what}: source={ours!r} target={theirs!r}"
    lacking = cpuid.missing(source.get("cpu_features") or {}, target.get("cpu_features") or {})
    if lacking:
        bits = ", ".join(f"CPUID {key} {value:#x}" for key, value in sorted(lacking.items()))
        return (f"The target's processor lacks features the guest was shown ({bits}); hide them from "
                "the source VM with VBoxManage modifyvm --cpuid")
    return None


def hardware_config(spec) -> dict:
    """What both ends compare, from the VM's launch spec. The accelerator and the CPU features are
    added from the running vCPU process, which knows what "auto" chose and what the guest sees."""
    return {"memory_mib": spec.memory_mib, "cpus": spec.cpus, "acpi": spec.acpi,
            "ide_controller": spec.ide_controller, "drives": [drive.text() for drive in spec.drives],
            # The cards: the guest's driver state is for exactly these (MAC addresses may differ,
            # as VirtualBox allows; the guest keeps the source's until it resets the card).
            "nics": [f"{nic.slot + 1}:{nic.chip}:{nic.attachment}" for nic in spec.nics]}
