"""PCI configuration space: functions with write masks and BARs, the root bus, configuration
mechanism #1 on ports 0xCF8/0xCFC, and the i440FX host bridge at 00:00.0 with its PAM registers."""

from __future__ import annotations

from typing import Callable

CONFIG_ADDRESS_PORT, CONFIG_DATA_PORT = 0xCF8, 0xCFC
CONFIG_SPACE_SIZE = 256
ENABLE_BIT = 0x80000000
ADDRESS_MASK = 0x80FFFFFC           # bits 30:24 are reserved and bits 1:0 read as 0

VENDOR_ID, DEVICE_ID, COMMAND, STATUS = 0x00, 0x02, 0x04, 0x06
REVISION_ID, CLASS_PROG_IF, CACHE_LINE_SIZE, LATENCY_TIMER, HEADER_TYPE = 0x08, 0x09, 0x0C, 0x0D, 0x0E
BAR0, ROM_ADDRESS = 0x10, 0x30
SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID = 0x2C, 0x2E
INTERRUPT_LINE, INTERRUPT_PIN = 0x3C, 0x3D
HEADER_MULTIFUNCTION = 0x80

COMMAND_IO, COMMAND_MEMORY, COMMAND_MASTER = 0x0001, 0x0002, 0x0004
COMMAND_WRITABLE = 0x0547           # I/O, memory, bus master, parity, SERR, INTx disable

BAR_IO, BAR_MEM32, BAR_MEM64 = "io", "mem32", "mem64"
BAR_IO_FLAG, BAR_MEM64_FLAG, BAR_PREFETCH_FLAG = 0x1, 0x4, 0x8


class PciFunction:
    """A type-0 configuration header. Guest writes land through `wmask`; BAR sizing falls out of
    it: writing all-ones to a BAR reads back ~(size - 1) plus the read-only type bits."""

    def __init__(self, vendor_id: int, device_id: int, class_code: int, *, revision: int = 0,
                 header_type: int = 0, subsystem_vendor_id: int = 0, subsystem_id: int = 0,
                 interrupt_pin: int = 0):
        self.config = bytearray(CONFIG_SPACE_SIZE)
        self.wmask = bytearray(CONFIG_SPACE_SIZE)
        self.bars: dict[int, tuple[str, int]] = {}
        self._set(VENDOR_ID, 2, vendor_id)
        self._set(DEVICE_ID, 2, device_id)
        self.config[REVISION_ID] = revision
        self._set(CLASS_PROG_IF, 3, class_code)
        self.config[HEADER_TYPE] = header_type
        self._set(SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor_id)
        self._set(SUBSYSTEM_ID, 2, subsystem_id)
        self.config[INTERRUPT_PIN] = interrupt_pin
        self._set_wmask(COMMAND, 2, COMMAND_WRITABLE)
        self.wmask[CACHE_LINE_SIZE] = self.wmask[LATENCY_TIMER] = self.wmask[INTERRUPT_LINE] = 0xFF
        self._power_on = bytes(self.config)

    def _set(self, offset: int, size: int, value: int) -> None:
        self.config[offset:offset + size] = value.to_bytes(size, "little")

    def _set_wmask(self, offset: int, size: int, mask: int) -> None:
        self.wmask[offset:offset + size] = mask.to_bytes(size, "little")

    def set_writable(self, offset: int, size: int, mask: int | None = None) -> None:
        """Let the guest write a device-specific register (all bits unless `mask` says which)."""
        self._set_wmask(offset, size, (1 << (8 * size)) - 1 if mask is None else mask)

    def add_bar(self, index: int, size: int, kind: str = BAR_MEM32, *, prefetchable: bool = False) -> None:
        """Declare BAR `index` (0-5) decoding `size` bytes (a power of two)."""
        if kind not in (BAR_IO, BAR_MEM32, BAR_MEM64):
            raise ValueError(f"unknown BAR kind '{kind}' (expected io, mem32 or mem64)")
        if not 0 <= index <= (4 if kind == BAR_MEM64 else 5) or index in self.bars:
            raise ValueError(f"BAR {index} is not free for a {kind} BAR")
        minimum = 4 if kind == BAR_IO else 16
        if size < minimum or size & (size - 1):
            raise ValueError(f"a {kind} BAR must be a power of two of at least {minimum} bytes, not {size}")
        offset = BAR0 + 4 * index
        if kind == BAR_IO:
            flags = BAR_IO_FLAG
        else:
            flags = (BAR_MEM64_FLAG if kind == BAR_MEM64 else 0) | (BAR_PREFETCH_FLAG if prefetchable else 0)
        self._set(offset, 4, flags)
        self._set_wmask(offset, 4, ~(size - 1) & 0xFFFFFFFF & ~(0x3 if kind == BAR_IO else 0xF))
        self.bars[index] = (kind, size)
        if kind == BAR_MEM64:
            self._set_wmask(offset + 4, 4, (~(size - 1) >> 32) & 0xFFFFFFFF)
            self.bars[index + 1] = ("mem64-high", size)
        self._power_on = bytes(self.config)

    def bar_address(self, index: int) -> int:
        """The address the guest programmed into BAR `index` (type bits stripped)."""
        kind, _ = self.bars[index]
        offset = BAR0 + 4 * index
        low = int.from_bytes(self.config[offset:offset + 4], "little")
        if kind == BAR_IO:
            return low & ~0x3
        address = low & ~0xF
        if kind == BAR_MEM64:
            address |= int.from_bytes(self.config[offset + 4:offset + 8], "little") << 32
        return address

    @property
    def command(self) -> int:
        return int.from_bytes(self.config[COMMAND:COMMAND + 2], "little")

    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset:offset + size].ljust(size, b"\xff"), "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        config, wmask = self.config, self.wmask
        for i in range(size):
            at = offset + i
            if at >= CONFIG_SPACE_SIZE:
                break
            mask = wmask[at]
            if mask:
                config[at] = (config[at] & ~mask) | ((value >> (8 * i)) & mask)

    def reset(self) -> None:
        self.config[:] = self._power_on

    def snapshot(self) -> dict:
        return {"config": bytes(self.config)}

    def restore(self, state: dict) -> None:
        config = bytes(state["config"])
        if len(config) != CONFIG_SPACE_SIZE:
            raise ValueError(f"PCI state has {len(config)} bytes of configuration space, expected 256")
        # Identity bytes come from this VM's device, so a mismatch shows up instead of going unnoticed.
        if config[:4] != self._power_on[:4]:
            raise ValueError(f"PCI state is for device {config[1]:02x}{config[0]:02x}:"
                             f"{config[3]:02x}{config[2]:02x}, not this one")
        self.config[:] = config


class WatchedBarsFunction(PciFunction):
    """A function whose VMM must hear where the guest puts its BARs. After add_bar(), a subclass
    calls watch_bars({index: callback}); each callback gets the BAR's new address, or None when it
    stops decoding (its command-register enable bit off, or no address), and fires again after
    reset() and restore(), so a restored VM gets its devices placed."""

    def watch_bars(self, callbacks: dict[int, Callable[[int | None], None]]) -> None:
        self._bar_callbacks = callbacks
        self._placed = self._placements()

    def decoded_address(self, index: int) -> int | None:
        kind, _ = self.bars[index]
        enable = COMMAND_IO if kind == BAR_IO else COMMAND_MEMORY
        return (self.bar_address(index) or None) if self.command & enable else None

    def _placements(self) -> dict[int, int | None]:
        return {index: self.decoded_address(index) for index in self._bar_callbacks}

    def _tell(self, force: bool = False) -> None:
        now = self._placements()
        for index, address in now.items():
            if force or address != self._placed.get(index):
                self._bar_callbacks[index](address)
        self._placed = now

    def config_write(self, offset: int, size: int, value: int) -> None:
        super().config_write(offset, size, value)
        self._tell()

    def reset(self) -> None:
        super().reset()
        self._tell()

    def restore(self, state: dict) -> None:
        super().restore(state)
        self._tell(force=True)


class PciRoot:
    """Bus 0: the functions present, addressed by (device, function)."""

    def __init__(self):
        self.functions: dict[tuple[int, int], PciFunction] = {}
        self.interrupts = None          # the board's INTx routing (chipset/intx.py), set by the platform

    def add(self, function: PciFunction, device: int, function_number: int = 0) -> None:
        if not 0 <= device < 32 or not 0 <= function_number < 8:
            raise ValueError(f"PCI address 00:{device:02x}.{function_number} is out of range")
        if (device, function_number) in self.functions:
            raise ValueError(f"PCI address 00:{device:02x}.{function_number} is already taken")
        self.functions[(device, function_number)] = function

    def function(self, bus: int, device: int, function_number: int) -> PciFunction | None:
        if bus != 0:
            return None
        return self.functions.get((device, function_number))

    def reset(self) -> None:
        for function in self.functions.values():
            function.reset()

    def snapshot(self) -> dict:
        return {f"00:{d:02x}.{f}": fn.snapshot() for (d, f), fn in sorted(self.functions.items())}

    def restore(self, state: dict) -> None:
        names = {f"00:{d:02x}.{f}": fn for (d, f), fn in self.functions.items()}
        if set(state) != set(names):
            raise ValueError(f"the saved PCI functions ({', '.join(sorted(state))}) differ from this VM's "
                             f"({', '.join(sorted(names))})")
        for name, fn in names.items():
            fn.restore(state[name])


class PciConfigIo:
    """Configuration mechanism #1: offset 0 is the dword address register (0xCF8), offsets 4-7 the
    data window (0xCFC-0xCFF). Byte and word accesses to offsets 0-3 are not the address register
    (0xCF9 belongs to the reset-control register, registered over this range)."""

    name = "pci"

    def __init__(self, root: PciRoot):
        self.root = root
        self.address = 0

    def _target(self, data_offset: int) -> tuple[PciFunction | None, int]:
        address = self.address
        if not address & ENABLE_BIT:
            return None, 0
        function = self.root.function((address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 0x7)
        return function, (address & 0xFC) + data_offset

    def read(self, offset: int, size: int) -> int:
        if offset == 0 and size == 4:
            return self.address
        if offset >= 4:
            function, register = self._target(offset - 4)
            if function is not None:
                return function.config_read(register, size)
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and size == 4:
            self.address = value & ADDRESS_MASK
        elif offset >= 4:
            function, register = self._target(offset - 4)
            if function is not None:
                function.config_write(register, size, value)

    def reset(self) -> None:
        self.address = 0
        self.root.reset()

    def snapshot(self) -> dict:
        return {"address": self.address, "functions": self.root.snapshot()}

    def restore(self, state: dict) -> None:
        self.root.restore(state["functions"])
        self.address = int(state["address"]) & ADDRESS_MASK


PAM_FIRST, PAM_COUNT = 0x59, 7        # 0x59 high nibble: 0xF0000-0xFFFFF; then 16 KiB per nibble
SMRAM = 0x72
SMRAM_POWER_ON = 0x02                 # C_BASE_SEG = 010: SMRAM would sit at 0xA0000


class I440fxHostBridge(PciFunction):
    """The i440FX PMC at 00:00.0. Subsystem 1AF4:1100 is what makes SeaBIOS say "Running on QEMU
    (i440fx)"; it then unlocks the BIOS area through the PAM registers.

    Only the register side of PAM is here: `on_pam_change(pam)` receives the 7 bytes 0x59-0x5F
    whenever they change (and after restore) so the memory side can remap 0xC0000-0xFFFFF."""

    def __init__(self, on_pam_change: Callable[[bytes], None] | None = None):
        super().__init__(0x8086, 0x1237, 0x060000, revision=0x02,
                         subsystem_vendor_id=0x1AF4, subsystem_id=0x1100)
        self._set(STATUS, 2, 0x0280)       # fast back-to-back capable, medium DEVSEL timing
        self.set_writable(PAM_FIRST, PAM_COUNT)
        self.config[SMRAM] = SMRAM_POWER_ON
        self.set_writable(SMRAM, 1, 0x78)  # D_OPEN, D_CLS, D_LCK, G_SMRAME; the base is fixed
        self._power_on = bytes(self.config)
        self.on_pam_change = on_pam_change

    @property
    def pam(self) -> bytes:
        return bytes(self.config[PAM_FIRST:PAM_FIRST + PAM_COUNT])

    def config_write(self, offset: int, size: int, value: int) -> None:
        before = self.pam
        super().config_write(offset, size, value)
        if self.on_pam_change is not None and self.pam != before:
            self.on_pam_change(self.pam)

    def reset(self) -> None:
        before = self.pam
        super().reset()
        if self.on_pam_change is not None and self.pam != before:
            self.on_pam_change(self.pam)

    def restore(self, state: dict) -> None:
        super().restore(state)
        if self.on_pam_change is not None:
            self.on_pam_change(self.pam)
