"""Every message that crosses a process boundary, declared once, with the channel's version.

Messages are msgpack arrays whose first element is the message code; both ends import these
definitions. The io channel follows vfio-user's region read/write model (research/vmm.md §3.4)
with crosvm's rule: writes are posted (no reply), reads wait for their reply."""

from __future__ import annotations

import msgpack

IO_VERSION = 2
IRQ_VERSION = 2


class Io:
    """io channel, vcpu -> devices. A frame is a batch: [IO_VERSION, [message, ...]].

    A reply is [seq, value, dma] where dma lists the (gpa, length) ranges of guest RAM that
    devices wrote since the last reply or interrupt: the vCPU side must forget code it translated
    from them before the guest reads the result."""

    PIO_WRITE = 1          # [code, port, size, value]                 posted
    PIO_READ = 2           # [code, seq, port, size]                   -> [seq, value, dma]
    PIO_WRITE_STRING = 3   # [code, port, size, data]                  posted
    PIO_READ_STRING = 4    # [code, seq, port, size, count]            -> [seq, data, dma]
    MMIO_WRITE = 5         # [code, addr, size, value]                 posted
    MMIO_READ = 6          # [code, seq, addr, size]                   -> [seq, value, dma]
    PCI_CONFIG_WRITE = 7   # [code, device, function, offset, size, value]   posted
    RESET = 8              # [code]: platform reset                          posted
    SYNC = 9               # [code, seq] -> [seq, None, dma]: every earlier access is applied
    READS = (PIO_READ, PIO_READ_STRING, MMIO_READ)


class Irq:
    """irq channel, devices -> vcpu: [IRQ_VERSION, LINE, gsi, level] or [IRQ_VERSION, DMA, ranges].

    DMA ranges always travel before the interrupt that announces the transfer."""

    LINE = 1
    DMA = 2


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class ProtocolError(Exception):
    """A peer sent something this version does not understand."""


INPUT_VERSION = 1


class Input:
    """input channel, vrdp (or tests) -> vcpu process, pushed:
    [INPUT_VERSION, KEY, set-1 scancode, extended, pressed] or
    [INPUT_VERSION, MOUSE, dx, dy, dz, buttons]  (buttons: bit 0 left, 1 right, 2 middle) or
    [INPUT_VERSION, SYNC, locks]  (the client's lock keys: bit 0 scroll, 1 num, 2 caps)."""

    KEY = 1
    MOUSE = 2
    SYNC = 3


DISPLAY_VERSION = 1


class Display:
    """display channel, vcpu process -> vrdp, published (PUB/SUB):
    [DISPLAY_VERSION, sequence, width, height, bpp, mode_changed, [[x, y, w, h], ...]].

    The pixels stay in the VM's "surface" shared-memory region (services.ipc.surface:
    read_header/frame_view); a message only says what changed since the previous one."""
