"""What a vCPU thread does with each KVM_RUN exit: port and MMIO accesses to the bus, stops otherwise.

Semantics from research/vmm.md §1.3; the exit structures are laid out in §1.2."""

from __future__ import annotations

import logging

from services.vcpu.engine import IoBus, StopReason
from services.vcpu.kvm import ioctl as k
from services.vcpu.kvm.vcpu import Vcpu
from services.vcpu.kvm.vm import Vm

log = logging.getLogger("headbox.vcpu.kvm")

SYSTEM_EVENTS = {k.KVM_SYSTEM_EVENT_SHUTDOWN: StopReason.POWEROFF, k.KVM_SYSTEM_EVENT_RESET: StopReason.RESET}


def handle_exit(vcpu: Vcpu, vm: Vm, bus: IoBus) -> StopReason | None:
    """Serve one exit; a StopReason means the VM as a whole must stop."""
    run = vcpu.run_page
    reason = run.exit_reason
    if reason == k.KVM_EXIT_IO:
        _io(vcpu, run.exit.io, bus)
    elif reason == k.KVM_EXIT_MMIO:
        _mmio(run.exit.mmio, vm, bus)
    elif reason == k.KVM_EXIT_INTR:
        pass   # a kick; the run loop looks at the stop request
    elif reason == k.KVM_EXIT_SHUTDOWN:
        log.info("vCPU %d shut down (triple fault) at %s", vcpu.index, _where(vcpu))
        return StopReason.TRIPLE_FAULT
    elif reason == k.KVM_EXIT_SYSTEM_EVENT:
        return _system_event(vcpu, run.exit.system_event)
    elif reason == k.KVM_EXIT_INTERNAL_ERROR:
        _log_internal_error(vcpu, run.exit.internal)
        return StopReason.ERROR
    elif reason == k.KVM_EXIT_FAIL_ENTRY:
        fail = run.exit.fail_entry
        log.error("vCPU %d: KVM entry failed, hardware reason %#x on host cpu %d, %s", vcpu.index,
                  fail.hardware_entry_failure_reason, fail.cpu, _where(vcpu))
        return StopReason.ERROR
    else:
        # HLT cannot happen with the in-kernel irqchip (research §1.3); anything else is unexpected.
        log.error("vCPU %d: unexpected KVM exit reason %d at %s", vcpu.index, reason, _where(vcpu))
        return StopReason.ERROR
    return None


def _io(vcpu: Vcpu, io: k.KvmRunIo, bus: IoBus) -> None:
    size, count, offset = io.size, io.count, io.data_offset
    if io.direction == k.KVM_EXIT_IO_OUT:
        data = vcpu.io_data(offset, size * count)
        if count == 1:
            bus.pio_write(io.port, size, int.from_bytes(data, "little"))
        else:
            bus.pio_write_string(io.port, size, data)   # rep outs: up to 1 KiB per exit
        return
    if count == 1:
        data = (bus.pio_read(io.port, size) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    else:
        data = bytes(bus.pio_read_string(io.port, size, count)).ljust(size * count, b"\xff")
    # The IN completes on the next KVM_RUN (research §1.3).
    vcpu.set_io_data(offset, data[:size * count])


def _mmio(mmio: k.KvmRunMmio, vm: Vm, bus: IoBus) -> None:
    addr, length = mmio.phys_addr, mmio.len
    if mmio.is_write:
        if vm.readonly_slot_at(addr) is not None:
            return   # a write to ROM: KVM_MEM_READONLY turns it into an MMIO exit; ROM ignores it
        bus.mmio_write(addr, length, int.from_bytes(bytes(mmio.data[:length]), "little"))
        return
    value = bus.mmio_read(addr, length) & ((1 << (8 * length)) - 1)
    for i, byte in enumerate(value.to_bytes(length, "little")):
        mmio.data[i] = byte


def _system_event(vcpu: Vcpu, event: k.KvmRunSystemEvent) -> StopReason:
    reason = SYSTEM_EVENTS.get(event.type)
    if reason is None:
        log.error("vCPU %d: guest system event %d (crash) at %s", vcpu.index, event.type, _where(vcpu))
        return StopReason.ERROR
    return reason


def _log_internal_error(vcpu: Vcpu, internal: k.KvmRunInternal) -> None:
    name = k.KVM_INTERNAL_ERROR_NAMES.get(internal.suberror, "unknown")
    data = " ".join(f"{internal.data[i]:#x}" for i in range(min(internal.ndata, 16)))
    log.error("vCPU %d: KVM internal error, suberror %d (%s), %s, data [%s]", vcpu.index,
              internal.suberror, name, _where(vcpu), data)


def _where(vcpu: Vcpu) -> str:
    """RIP with CS, for log lines (real-mode code needs the segment base to be found)."""
    regs, sregs = k.KvmRegs(), k.KvmSregs()
    for request, value in ((k.KVM_GET_REGS, regs), (k.KVM_GET_SREGS, sregs)):
        if k.ioctl_raw(vcpu.fd, request, value)[0] < 0:
            return "rip unknown"
    return f"rip {regs.rip:#x} (cs {sregs.cs.selector:#x} base {sregs.cs.base:#x})"
