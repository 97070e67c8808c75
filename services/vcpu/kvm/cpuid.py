"""The CPUID table each vCPU gets: what KVM supports, its APIC ID patched in, user masks applied.

Research §1.4 step 6: KVM_GET_SUPPORTED_CPUID -> per-vCPU APIC IDs -> KVM_SET_CPUID2."""

from __future__ import annotations

from services.vcpu.engine import EngineError
from services.vcpu.kvm import ioctl as k

# (leaf, subleaf) -> (eax, ebx, ecx, edx) masks ANDed into the matching entries.
CpuidOverrides = dict[tuple[int, int], tuple[int, int, int, int]]

# Leaves whose EDX is the x2APIC ID of the processor asking (extended topology, v1 and v2).
TOPOLOGY_LEAVES = (0xB, 0x1F)


def vcpu_cpuid(supported: list[k.KvmCpuidEntry2], apic_id: int,
               overrides: CpuidOverrides | None = None,
               values: dict[int, tuple[int, int, int, int]] | None = None) -> list[k.KvmCpuidEntry2]:
    entries = [k.KvmCpuidEntry2.from_buffer_copy(e) for e in supported]
    for leaf, regs in (values or {}).items():
        # VirtualBox's --cpuid: the guest sees exactly these values for the leaf (subleaf 0).
        matching = [e for e in entries if e.function == leaf and e.index == 0]
        if not matching:
            entries.append(k.KvmCpuidEntry2(leaf, 0, 0, *regs))
        for e in matching:
            e.eax, e.ebx, e.ecx, e.edx = regs
    for e in entries:
        if e.function == 1:
            e.ebx = (e.ebx & 0x00FFFFFF) | (apic_id << 24)
        elif e.function in TOPOLOGY_LEAVES:
            e.edx = apic_id
    for (leaf, subleaf), masks in (overrides or {}).items():
        _apply_mask(entries, leaf, subleaf, masks)
    return entries


def _apply_mask(entries, leaf: int, subleaf: int, masks) -> None:
    if len(masks) != 4:
        raise EngineError(f"CPUID override for leaf {leaf:#x} needs four masks (eax, ebx, ecx, edx)")
    matched = False
    for e in entries:
        indexed = e.flags & k.KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        if e.function == leaf and (e.index == subleaf or not indexed):
            e.eax &= masks[0]
            e.ebx &= masks[1]
            e.ecx &= masks[2]
            e.edx &= masks[3]
            matched = True
    if not matched:
        raise EngineError(f"CPUID leaf {leaf:#x} subleaf {subleaf:#x} is not offered by this host's KVM")


def read_leaf(entries: list[k.KvmCpuidEntry2], leaf: int) -> tuple[int, int, int, int]:
    for e in entries:
        if e.function == leaf and e.index == 0:
            return e.eax, e.ebx, e.ecx, e.edx
    return 0, 0, 0, 0


def to_struct(entries: list[k.KvmCpuidEntry2]):
    buf = k.cpuid2_type(len(entries))(nent=len(entries))
    for i, e in enumerate(entries):
        buf.entries[i] = e
    return buf


def to_data(entries: list[k.KvmCpuidEntry2]) -> list[list[int]]:
    return [[e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx] for e in entries]


def from_data(rows: list[list[int]]) -> list[k.KvmCpuidEntry2]:
    return [k.KvmCpuidEntry2(*row) for row in rows]
