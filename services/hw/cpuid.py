"""What the guest sees of the processor through CPUID: the feature bits a teleport compares (a guest
may use any feature it was shown, so the target must offer each of them). VirtualBox's `--cpuid <leaf>
<eax> <ebx> <ecx> <edx>` values reach the engines as the launch spec's `cpuid`."""

from __future__ import annotations

# (leaf, register index 0-3 = eax..edx) of the feature flags: basic, structured extended (subleaf 0),
# extended. Other registers hold IDs, sizes and counts that may differ freely.
FEATURE_REGISTERS = ((0x1, 2), (0x1, 3), (0x7, 1), (0x7, 2), (0x7, 3), (0x80000001, 2), (0x80000001, 3))
REGISTER_NAMES = ("eax", "ebx", "ecx", "edx")


def features(read) -> dict[str, int]:
    """The feature registers, as {"leaf.reg": bits}, from read(leaf) -> (eax, ebx, ecx, edx)."""
    found, cache = {}, {}
    for leaf, reg in FEATURE_REGISTERS:
        if leaf not in cache:
            cache[leaf] = read(leaf)
        found[f"{leaf:#x}.{REGISTER_NAMES[reg]}"] = int(cache[leaf][reg])
    return found


def missing(source: dict[str, int], target: dict[str, int]) -> dict[str, int]:
    """Feature bits the source's guest was shown that the target's would not have."""
    return {key: bits & ~target.get(key, 0) for key, bits in source.items() if bits & ~target.get(key, 0)}
