"""Every message that crosses a process boundary, declared once, with the channel's version.

Messages are msgpack arrays whose first element is the message code; both ends import these
definitions. The io channel follows vfio-user's region read/write model (research/vmm.md §3.4)
with crosvm's rule: writes are posted (no reply), reads wait for their reply."""

from __future__ import annotations

import msgpack

IO_VERSION = 1
IRQ_VERSION = 1


class Io:
    """io channel, vcpu -> devices. A frame is a batch: [IO_VERSION, [message, ...]]."""

    PIO_WRITE = 1          # [code, port, size, value]                 posted
    PIO_READ = 2           # [code, seq, port, size]                   -> [seq, value]
    PIO_WRITE_STRING = 3   # [code, port, size, data]                  posted
    PIO_READ_STRING = 4    # [code, seq, port, size, count]            -> [seq, data]
    MMIO_WRITE = 5         # [code, addr, size, value]                 posted
    MMIO_READ = 6          # [code, seq, addr, size]                   -> [seq, value]
    READS = (PIO_READ, PIO_READ_STRING, MMIO_READ)


class Irq:
    """irq channel, devices -> vcpu: [IRQ_VERSION, gsi, level]."""


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class ProtocolError(Exception):
    """A peer sent something this version does not understand."""


CONTROL_VERSION = 1


class Control:
    """control channel, manager -> each service: request {"v", "op", ...} -> reply {"ok", ...}.

    On failure the reply is {"ok": False, "error": "<one line for the user>"}."""

    STATUS = "status"        # -> state, accel, accel_reason, cpus, ram_mib, pid
    PAUSE = "pause"          # -> once the vCPUs are stopped and their state is consistent
    RESUME = "resume"
    RESET = "reset"
    POWEROFF = "poweroff"
    SNAPSHOT = "snapshot"    # paused only -> {"state": machine state}
    RESTORE = "restore"      # paused only, {"state": ...}
    DIRTY = "dirty"          # -> {"bitmap": bytes}: RAM pages written since the last call
