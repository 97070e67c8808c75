"""services/vcpu/kvm/exits.py against hand-made kvm_run pages: port and MMIO exits reach the bus right.

No /dev/kvm needed: the kvm_run page is a ctypes structure over a plain buffer, as the kernel lays it out."""

import ctypes

from services.hw.memory import MemorySlot
from services.vcpu.engine import StopReason
from services.vcpu.kvm import ioctl as k
from services.vcpu.kvm.exits import handle_exit

DATA_OFFSET = 4096   # where KVM puts string I/O data in the vCPU mapping (research §1.2)


class FakeVcpu:
    index = 0
    fd = -1

    def __init__(self):
        self.page = bytearray(8192)
        self.run_page = k.KvmRun.from_buffer(self.page)

    def io_data(self, offset, length):
        return bytes(self.page[offset:offset + length])

    def set_io_data(self, offset, data):
        self.page[offset:offset + len(data)] = data


class FakeVm:
    def __init__(self, rom: MemorySlot | None = None):
        self.rom = rom

    def readonly_slot_at(self, gpa):
        return self.rom if self.rom and self.rom.gpa <= gpa < self.rom.end else None


class Bus:
    def __init__(self):
        self.calls = []

    def pio_write(self, port, size, value):
        self.calls.append(("out", port, size, value))

    def pio_write_string(self, port, size, data):
        self.calls.append(("outs", port, size, data))

    def pio_read(self, port, size):
        self.calls.append(("in", port, size))
        return 0x12345678

    def pio_read_string(self, port, size, count):
        self.calls.append(("ins", port, size, count))
        return bytes(range(size * count))

    def mmio_read(self, addr, size):
        self.calls.append(("read", addr, size))
        return 0x1122334455667788

    def mmio_write(self, addr, size, value):
        self.calls.append(("write", addr, size, value))


def io_exit(vcpu, direction, size, port, count, data=b""):
    run = vcpu.run_page
    run.exit_reason = k.KVM_EXIT_IO
    io = run.exit.io
    io.direction, io.size, io.port, io.count, io.data_offset = direction, size, port, count, DATA_OFFSET
    vcpu.set_io_data(DATA_OFFSET, data)


def mmio_exit(vcpu, addr, length, is_write, data=b""):
    run = vcpu.run_page
    run.exit_reason = k.KVM_EXIT_MMIO
    mmio = run.exit.mmio
    mmio.phys_addr, mmio.len, mmio.is_write = addr, length, int(is_write)
    ctypes.memmove(mmio.data, data.ljust(8, b"\0"), 8)


def test_out_and_batched_outs():
    vcpu, bus = FakeVcpu(), Bus()
    io_exit(vcpu, k.KVM_EXIT_IO_OUT, 2, 0x1F0, 1, b"\x34\x12")
    assert handle_exit(vcpu, FakeVm(), bus) is None
    io_exit(vcpu, k.KVM_EXIT_IO_OUT, 1, 0xE9, 5, b"hello")
    handle_exit(vcpu, FakeVm(), bus)
    assert bus.calls == [("out", 0x1F0, 2, 0x1234), ("outs", 0xE9, 1, b"hello")]


def test_in_and_batched_ins_fill_the_data_area():
    vcpu, bus = FakeVcpu(), Bus()
    io_exit(vcpu, k.KVM_EXIT_IO_IN, 2, 0x60, 1)
    handle_exit(vcpu, FakeVm(), bus)
    assert vcpu.io_data(DATA_OFFSET, 2) == b"\x78\x56"     # masked to the access size
    io_exit(vcpu, k.KVM_EXIT_IO_IN, 2, 0x1F0, 3)
    handle_exit(vcpu, FakeVm(), bus)
    assert vcpu.io_data(DATA_OFFSET, 6) == bytes(range(6))
    assert bus.calls == [("in", 0x60, 2), ("ins", 0x1F0, 2, 3)]


def test_mmio_read_write_and_rom_write_dropped():
    rom = MemorySlot("bios", 0xFFFF0000, 0x10000, None, 0, True)
    vcpu, bus, vm = FakeVcpu(), Bus(), FakeVm(rom)
    mmio_exit(vcpu, 0xFEBF0000, 4, False)
    handle_exit(vcpu, vm, bus)
    assert bytes(vcpu.run_page.exit.mmio.data[:4]) == b"\x88\x77\x66\x55"
    mmio_exit(vcpu, 0xA0000, 2, True, b"\xcd\xab")
    handle_exit(vcpu, vm, bus)
    mmio_exit(vcpu, 0xFFFF1234, 1, True, b"\x99")
    handle_exit(vcpu, vm, bus)
    assert bus.calls == [("read", 0xFEBF0000, 4), ("write", 0xA0000, 2, 0xABCD)]


def test_stop_exits():
    vcpu = FakeVcpu()
    vcpu.run_page.exit_reason = k.KVM_EXIT_SYSTEM_EVENT
    vcpu.run_page.exit.system_event.type = k.KVM_SYSTEM_EVENT_RESET
    assert handle_exit(vcpu, FakeVm(), Bus()) == StopReason.RESET
    vcpu.run_page.exit.system_event.type = k.KVM_SYSTEM_EVENT_SHUTDOWN
    assert handle_exit(vcpu, FakeVm(), Bus()) == StopReason.POWEROFF
