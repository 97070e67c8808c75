"""The launch spec: everything a VM's processes need to run it, built once (by the manager from the
settings, or by VBoxHeadless and the demo runner from their options) and handed to every process as
one file, `spec`, in the VM's runtime folder (0600). Each value has one name all the way down."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import msgpack

from services.ipc.naming import runtime_dir
from services.ipc.network import NetAdapter, NetworkError
from services.ipc.vrde import ConfigError, VrdeConfig
from services.private_file import UnsafeFolder, write_private

SPEC_VERSION = 1
DEFAULT_FIRMWARE = "/usr/share/seabios/bios.bin"
DRIVE_KINDS = ("hdd", "dvd")
IDE_CONTROLLERS = ("piix3", "piix4")
ACCELERATORS = ("auto", "kvm", "tcg")
BOOT_DEVICES = ("floppy", "dvd", "disk", "net")
MAX_MEMORY_MIB = 1 << 24        # what 44 physical address bits hold; the host's RAM is checked at start


class SpecError(ValueError):
    """A launch spec value that cannot run; one line for the user."""


@dataclass(frozen=True)
class Drive:
    """One attached medium: VBoxManage's `--port <channel> --device <unit> --type hdd|dvddrive`."""
    channel: int
    unit: int
    kind: str            # "hdd" or "dvd"
    path: str | None     # None: an empty DVD drive

    @classmethod
    def parse(cls, text: str) -> "Drive":
        """CHANNEL:UNIT:KIND[:PATH], e.g. 1:0:dvd:/isos/demo.iso or 0:0:hdd:/vms/disk.vdi."""
        parts = text.split(":", 3)
        if len(parts) < 3 or parts[0] not in ("0", "1") or parts[1] not in ("0", "1") \
                or parts[2] not in DRIVE_KINDS:
            raise SpecError(f"bad drive '{text}' (expected CHANNEL:UNIT:hdd|dvd[:PATH], channel and unit 0 or 1)")
        path = parts[3] if len(parts) == 4 and parts[3] else None
        return cls(int(parts[0]), int(parts[1]), parts[2], path).checked()

    def text(self) -> str:
        """As parse() reads it."""
        return f"{self.channel}:{self.unit}:{self.kind}" + (f":{self.path}" if self.path else "")

    def checked(self) -> "Drive":
        if self.channel not in (0, 1) or self.unit not in (0, 1) or self.kind not in DRIVE_KINDS:
            raise SpecError(f"bad drive {self}: channel and unit are 0 or 1, the kind hdd or dvd")
        if self.kind == "hdd" and not self.path:
            raise SpecError(f"the hard disk at {self.channel}:{self.unit} needs an image file")
        return self


@dataclass
class LaunchSpec:
    vm_id: str
    memory_mib: int = 256
    vram_mib: int = 16
    cpus: int = 1
    accel: str = "auto"
    firmware: str = DEFAULT_FIRMWARE
    boot: tuple[str, ...] = ("dvd", "disk")
    acpi: bool = True
    ide_controller: str | None = "piix3"        # None: no IDE controller
    drives: list[Drive] = field(default_factory=list)
    serial_log: str | None = None               # COM1's output; None: no serial port
    debug_log: str | None = None                # the firmware's debug port (0x402)
    cpuid: list = field(default_factory=list)   # [leaf, eax, ebx, ecx, edx]: VBoxManage --cpuid
    incoming: bool = False                      # a teleport target or a saved state: wait paused
    vrde: VrdeConfig | None = None              # None: no RDP server
    device_process: bool = True                 # False: the vCPU process alone (tests, start-up benchmarks)
    exit_port: int | None = None                # the test-exit device of the CPU test programs
    nics: list[NetAdapter] = field(default_factory=list)   # network adapters (services/ipc/network.py)

    def __post_init__(self) -> None:
        self.boot = tuple(self.boot)
        self.drives = [d if isinstance(d, Drive) else Drive(**d) for d in self.drives]
        self.nics = [n if isinstance(n, NetAdapter) else NetAdapter(**n) for n in self.nics]
        if isinstance(self.vrde, dict):
            self.vrde = VrdeConfig.from_dict(self.vrde)

    def validate(self) -> "LaunchSpec":
        if self.accel not in ACCELERATORS:
            raise SpecError(f"unknown accelerator '{self.accel}' (expected kvm, tcg or auto)")
        if not isinstance(self.memory_mib, int) or not 2 <= self.memory_mib <= MAX_MEMORY_MIB:
            raise SpecError(f"{self.memory_mib} MiB of RAM: expected 2..{MAX_MEMORY_MIB}")
        if not isinstance(self.cpus, int) or not 1 <= self.cpus <= 64:
            raise SpecError(f"{self.cpus} CPUs: expected 1..64")
        if self.ide_controller not in (*IDE_CONTROLLERS, None):
            raise SpecError(f"unknown IDE controller '{self.ide_controller}'")
        bad = [device for device in self.boot if device not in BOOT_DEVICES]
        if bad:
            raise SpecError(f"unknown boot device '{bad[0]}' (expected {', '.join(BOOT_DEVICES)})")
        for drive in self.drives:
            drive.checked()
        for entry in self.cpuid:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 5
                    and all(isinstance(v, int) and 0 <= v <= 0xFFFFFFFF for v in entry)):
                raise SpecError(f"bad CPUID override {entry!r} (expected [leaf, eax, ebx, ecx, edx], 32-bit each)")
        if self.vrde is not None:
            self.vrde.validate()
        try:
            for nic in self.nics:
                nic.validate()
        except NetworkError as error:
            raise SpecError(str(error)) from None
        if len({nic.slot for nic in self.nics}) != len(self.nics):
            raise SpecError("two network adapters share a slot")
        return self

    # -- one file, one format ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        data = dataclasses.asdict(self)
        return msgpack.packb({"version": SPEC_VERSION, "spec": data}, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> "LaunchSpec":
        try:
            raw = msgpack.unpackb(data, raw=False)
        except Exception:      # msgpack raises several types for garbage
            raise SpecError("the launch spec is not msgpack") from None
        if not isinstance(raw, dict) or raw.get("version") != SPEC_VERSION or not isinstance(raw.get("spec"), dict):
            raise SpecError(f"expected a launch spec of version {SPEC_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw["spec"]) - names)
        if unknown:
            raise SpecError(f"the launch spec has an unknown field '{unknown[0]}'")
        try:
            return cls(**raw["spec"]).validate()
        except (TypeError, ConfigError) as error:
            raise SpecError(f"the launch spec: {error}") from None

    def save(self, path: str | None = None) -> str:
        """Written atomically, 0600; by default into the VM's runtime folder. Returns the path."""
        path = path or spec_path(self.vm_id)
        write_private(path, self.validate().to_bytes())
        return path

    @classmethod
    def load(cls, path: str) -> "LaunchSpec":
        try:
            with open(path, "rb") as file:
                return cls.from_bytes(file.read())
        except OSError as error:
            raise SpecError(f"cannot read the launch spec '{path}': {error.strerror}") from None

    @classmethod
    def load_for_run(cls, path: str) -> "LaunchSpec":
        """The spec a VM process starts from, its runtime folder checked first: a folder another
        user could tamper with (services/private_file.private_folder) is a SpecError too."""
        spec = cls.load(path)
        try:
            runtime_dir(spec.vm_id)
        except UnsafeFolder as error:
            raise SpecError(str(error)) from None
        return spec


def spec_path(vm_id: str) -> str:
    return f"{runtime_dir(vm_id)}/spec"


def process_argv(program: str, path: str, python: str) -> list[str]:
    """The command line of one of a VM's processes ("vcpu", "devices", "vrdp"): the same for the
    demo runner, VBoxHeadless and the manager's supervisor."""
    return [python, "-m", f"services.{program}", "--spec", path]
