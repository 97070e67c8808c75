"""The device bus: maps port and MMIO address ranges to device models and dispatches accesses.

It implements the IoBus protocol the vCPU engine calls, and snapshots/restores every device by name."""

from __future__ import annotations

import bisect
import logging
from typing import Protocol, runtime_checkable

log = logging.getLogger("headbox.devices")

SPACES = ("pio", "mmio")
PIO_LIMIT = 0x10000
MMIO_LIMIT = 1 << 64
_ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


@runtime_checkable
class Device(Protocol):
    """A sans-I/O device model. Offsets are relative to the base of the range it was registered at.

    A device may also offer read_string(offset, size, count) -> bytes and
    write_string(offset, size, data) for `rep ins/outs`, and reset() for a platform reset."""

    def read(self, offset: int, size: int) -> int: ...
    def write(self, offset: int, size: int, value: int) -> None: ...
    def snapshot(self) -> dict: ...
    def restore(self, state: dict) -> None: ...


def all_ones(size: int) -> int:
    return _ALL_ONES.get(size) or (1 << (8 * size)) - 1


class _AddressSpace:
    """Sorted, non-overlapping [start, end) segments, each pointing at (device, device_base)."""

    def __init__(self, name: str, limit: int):
        self.name = name
        self.limit = limit
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.targets: list[tuple[Device, int]] = []

    def find(self, addr: int) -> tuple[Device, int] | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.ends[i]:
            return self.targets[i]
        return None

    def add(self, device: Device, base: int, length: int, overlay: bool) -> None:
        end = base + length
        if length <= 0 or base < 0 or end > self.limit:
            raise ValueError(f"{self.name} range {base:#x}+{length:#x} is outside the address space")
        i = bisect.bisect_right(self.starts, base) - 1
        hit_before = i >= 0 and base < self.ends[i]
        j = bisect.bisect_left(self.starts, end)
        overlapping = [k for k in range(max(i, 0), j) if self.starts[k] < end and base < self.ends[k]]
        if not overlapping:
            k = bisect.bisect_left(self.starts, base)
            self.starts.insert(k, base)
            self.ends.insert(k, end)
            self.targets.insert(k, (device, base))
            return
        k = overlapping[0]
        inside_one = (len(overlapping) == 1 and hit_before and k == i
                      and self.starts[k] <= base and end <= self.ends[k])
        if not (overlay and inside_one):
            owner = self.targets[overlapping[0]][0]
            raise ValueError(f"{self.name} range {base:#x}+{length:#x} overlaps "
                             f"{self.starts[k]:#x}-{self.ends[k] - 1:#x} ({type(owner).__name__})")
        # An overlay carves a hole in the range it sits in (0xCF9 inside 0xCF8-0xCFF); the pieces
        # left and right keep their original base so the outer device still sees its own offsets.
        outer_start, outer_end, outer = self.starts[k], self.ends[k], self.targets[k]
        pieces = []
        if outer_start < base:
            pieces.append((outer_start, base, outer))
        pieces.append((base, end, (device, base)))
        if end < outer_end:
            pieces.append((end, outer_end, outer))
        self.starts[k:k + 1] = [p[0] for p in pieces]
        self.ends[k:k + 1] = [p[1] for p in pieces]
        self.targets[k:k + 1] = [p[2] for p in pieces]


class Bus:
    """Dispatches by the address an access starts at (crosvm's rule); the device sees base-relative
    offsets. Unclaimed reads return all-ones and unclaimed writes are dropped, as on a PC."""

    def __init__(self, fallback=None):
        # Where unclaimed accesses go instead of the void: the io channel to the device process,
        # when this bus holds only the platform devices hosted beside the vCPUs.
        self.fallback = fallback
        self._pio = _AddressSpace("pio", PIO_LIMIT)
        self._mmio = _AddressSpace("mmio", MMIO_LIMIT)
        # Port I/O is the hot path: remember every port once looked up (False = unclaimed).
        self._pio_cache: dict[int, tuple[Device, int] | bool] = {}
        self._devices: dict[str, Device] = {}
        self._names: dict[int, str] = {}
        self._reported: set[tuple[str, int]] = set()

    # -- configuration -----------------------------------------------------------------------
    def register(self, device: Device, space: str, base: int, length: int, *,
                 name: str | None = None, overlay: bool = False) -> None:
        """Map [base, base+length) of `space` ('pio' or 'mmio') to `device`.

        `overlay=True` lets a range sit wholly inside one registered range and take precedence there.
        A device registered at several ranges keeps one name (used by snapshot and device())."""
        if space not in SPACES:
            raise ValueError(f"unknown address space '{space}' (expected pio or mmio)")
        known = self._names.get(id(device))
        if known is not None and name is not None and name != known:
            raise ValueError(f"device '{known}' cannot also be registered as '{name}'")
        if known is None:
            name = name or getattr(device, "name", None) or type(device).__name__.lower()
            if name in self._devices:
                raise ValueError(f"another device is already registered as '{name}'")
        (self._pio if space == "pio" else self._mmio).add(device, base, length, overlay)
        if known is None:
            self._devices[name] = device
            self._names[id(device)] = name
        self._pio_cache.clear()

    def unregister(self, device: Device, space: str | None = None) -> None:
        """Remove every range of `device` (in one space, or both): a BAR moved or was disabled."""
        for addresses in (self._pio, self._mmio):
            if space is not None and addresses.name != space:
                continue
            keep = [i for i, target in enumerate(addresses.targets) if target[0] is not device]
            addresses.starts = [addresses.starts[i] for i in keep]
            addresses.ends = [addresses.ends[i] for i in keep]
            addresses.targets = [addresses.targets[i] for i in keep]
        self._pio_cache.clear()

    def device(self, name: str) -> Device:
        try:
            return self._devices[name]
        except KeyError:
            raise KeyError(f"no device named '{name}' on the bus") from None

    def devices(self) -> dict[str, Device]:
        return dict(self._devices)

    def mappings(self, space: str) -> list[tuple[int, int, str]]:
        """(start, end, device name) of every segment, for diagnostics."""
        s = self._pio if space == "pio" else self._mmio
        return [(a, b, self._names[id(t[0])]) for a, b, t in zip(s.starts, s.ends, s.targets)]

    # -- IoBus -------------------------------------------------------------------------------
    def pio_read(self, port: int, size: int) -> int:
        target = self._pio_cache.get(port)
        if target is None:
            target = self._lookup_pio(port)
        if target is False:
            if self.fallback is not None:
                return self.fallback.pio_read(port, size)
            return self._unclaimed("pio", port, size, None)
        device, base = target
        try:
            return device.read(port - base, size) & _ALL_ONES[size]
        except Exception:
            return self._failed(device, "read", "pio", port, size)

    def pio_write(self, port: int, size: int, value: int) -> None:
        target = self._pio_cache.get(port)
        if target is None:
            target = self._lookup_pio(port)
        if target is False:
            if self.fallback is not None:
                self.fallback.pio_write(port, size, value)
                return
            self._unclaimed("pio", port, size, value)
            return
        device, base = target
        try:
            device.write(port - base, size, value)
        except Exception:
            self._failed(device, "write", "pio", port, size)

    def pio_read_string(self, port: int, size: int, count: int) -> bytes:
        target = self._pio_cache.get(port)
        if target is None:
            target = self._lookup_pio(port)
        if target is False:
            if self.fallback is not None:
                return self.fallback.pio_read_string(port, size, count)
            self._unclaimed("pio", port, size, None)
            return b"\xff" * (size * count)
        device, base = target
        offset = port - base
        fast = getattr(device, "read_string", None)
        try:
            if fast is not None:
                return fast(offset, size, count)
            read = device.read
            mask = _ALL_ONES[size]
            return b"".join((read(offset, size) & mask).to_bytes(size, "little") for _ in range(count))
        except Exception:
            self._failed(device, "string read", "pio", port, size)
            return b"\xff" * (size * count)

    def pio_write_string(self, port: int, size: int, data: bytes) -> None:
        target = self._pio_cache.get(port)
        if target is None:
            target = self._lookup_pio(port)
        if target is False:
            if self.fallback is not None:
                self.fallback.pio_write_string(port, size, data)
                return
            self._unclaimed("pio", port, size, 0)
            return
        device, base = target
        offset = port - base
        fast = getattr(device, "write_string", None)
        try:
            if fast is not None:
                fast(offset, size, data)
                return
            write = device.write
            for i in range(0, len(data) - size + 1, size):
                write(offset, size, int.from_bytes(data[i:i + size], "little"))
        except Exception:
            self._failed(device, "string write", "pio", port, size)

    def mmio_read(self, addr: int, size: int) -> int:
        target = self._mmio.find(addr)
        if target is None:
            if self.fallback is not None:
                return self.fallback.mmio_read(addr, size)
            return self._unclaimed("mmio", addr, size, None)
        device, base = target
        try:
            return device.read(addr - base, size) & _ALL_ONES[size]
        except Exception:
            return self._failed(device, "read", "mmio", addr, size)

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        target = self._mmio.find(addr)
        if target is None:
            if self.fallback is not None:
                self.fallback.mmio_write(addr, size, value)
                return
            self._unclaimed("mmio", addr, size, value)
            return
        device, base = target
        try:
            device.write(addr - base, size, value)
        except Exception:
            self._failed(device, "write", "mmio", addr, size)

    def _lookup_pio(self, port: int):
        target = self._pio.find(port) or False
        self._pio_cache[port] = target
        return target

    def _unclaimed(self, space: str, addr: int, size: int, value: int | None) -> int:
        key = (space, addr)
        if key not in self._reported:
            self._reported.add(key)
            if value is None:
                log.debug("unclaimed %s read at %#x (size %d)", space, addr, size)
            else:
                log.debug("unclaimed %s write at %#x (size %d, value %#x)", space, addr, size, value)
        return all_ones(size)

    def _failed(self, device: Device, what: str, space: str, addr: int, size: int) -> int:
        # A device bug must not take the vCPU thread down with it: the guest sees a dead register.
        key = (f"fail:{space}", addr)
        if key not in self._reported:
            self._reported.add(key)
            log.exception("device '%s' failed on %s %s at %#x (size %d)",
                          self._names.get(id(device), "?"), space, what, addr, size)
        return all_ones(size)

    # -- platform reset and state ------------------------------------------------------------
    def reset(self) -> None:
        """Put every device that has a power-on state back into it (a platform reset)."""
        for device in self._devices.values():
            reset = getattr(device, "reset", None)
            if reset is not None:
                reset()

    def snapshot(self) -> dict:
        return {name: device.snapshot() for name, device in self._devices.items()}

    def restore(self, state: dict) -> None:
        """Restoring a device may map others (a PCI function's BARs place the VGA framebuffer), so
        devices are restored until none is left, and the two sets are compared at the end."""
        done: set[str] = set()
        while todo := [name for name in self._devices if name not in done]:
            for name in todo:
                device = self._devices.get(name)
                if device is not None and name in state:
                    device.restore(state[name])
                done.add(name)
        extra = sorted(set(state) - set(self._devices))
        if extra:
            raise ValueError(f"the saved state has devices this VM lacks: {', '.join(extra)}")
        missing = sorted(set(self._devices) - set(state))
        if missing:
            raise ValueError(f"the saved state lacks devices this VM has: {', '.join(missing)}")


class PioWindows:
    """An IoBus layer behind the bus for port ranges that move at run time (the PIIX4 PM block
    follows PMBA): the bus cannot unmap, so moving ranges are served here, from the accesses no
    registered device claims, and everything else goes on to `inner` (the io channel, or nothing)."""

    def __init__(self, inner=None):
        self.inner = inner
        self.windows: dict[str, tuple[int, int, object, object]] = {}

    def move(self, name: str, base: int | None, length: int, read, write) -> None:
        """Serve [base, base+length) with read(offset, size)/write(offset, size, value); None unmaps."""
        if base is None:
            self.windows.pop(name, None)
        else:
            self.windows[name] = (base, base + length, read, write)

    def _find(self, port: int):
        for start, end, read, write in self.windows.values():
            if start <= port < end:
                return start, read, write
        return None

    def pio_read(self, port: int, size: int) -> int:
        hit = self._find(port)
        if hit is not None:
            return hit[1](port - hit[0], size) & all_ones(size)
        return self.inner.pio_read(port, size) if self.inner is not None else all_ones(size)

    def pio_write(self, port: int, size: int, value: int) -> None:
        hit = self._find(port)
        if hit is not None:
            hit[2](port - hit[0], size, value)
        elif self.inner is not None:
            self.inner.pio_write(port, size, value)

    def pio_read_string(self, port: int, size: int, count: int) -> bytes:
        if self._find(port) is None and self.inner is not None:
            return self.inner.pio_read_string(port, size, count)
        return b"".join(self.pio_read(port, size).to_bytes(size, "little") for _ in range(count))

    def pio_write_string(self, port: int, size: int, data: bytes) -> None:
        if self._find(port) is None and self.inner is not None:
            self.inner.pio_write_string(port, size, data)
            return
        for i in range(0, len(data) - size + 1, size):
            self.pio_write(port, size, int.from_bytes(data[i:i + size], "little"))

    def mmio_read(self, addr: int, size: int) -> int:
        return self.inner.mmio_read(addr, size) if self.inner is not None else (1 << (8 * size)) - 1

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        if self.inner is not None:
            self.inner.mmio_write(addr, size, value)
