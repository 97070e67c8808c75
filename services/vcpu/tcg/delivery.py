"""Interrupt and exception delivery for the software accelerator: real, protected and long mode.

Unicorn reports events but never delivers them (research/unicorn-spike.md §1b, §1d). This module does
what the processor does (Intel SDM vol. 3 ch. 6): gate lookup, privilege checks, stack switch through
the TSS or an IST slot, frame push, segment loads, and the double-fault rules when delivery faults.
Every check and memory translation happens before any state changes, so a fault leaves no trace."""

from __future__ import annotations

import struct

from services.vcpu.tcg.cpustate import (
    AC_FLAG,
    CR0_PE,
    CR0_PG,
    DESC_B,
    DESC_C,
    DESC_CS,
    DESC_DPL_SHIFT,
    DESC_L,
    DESC_P,
    DESC_S,
    DESC_W,
    HF_CPL_MASK,
    HF_LMA,
    IF_FLAG,
    NT_FLAG,
    R_CS,
    R_DS,
    R_ES,
    R_FS,
    R_GS,
    R_SS,
    RF_FLAG,
    TF_FLAG,
    VM_FLAG,
    CPUX86State,
    descriptor_base,
    descriptor_flags,
    descriptor_limit,
    load_segment_cache,
    set_eflags,
)

DE, DB, NMI, BP, OF, BR, UD, NM, DF, TS, NP, SS, GP, PF, MF, AC = 0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17
WITH_ERROR_CODE = frozenset((DF, TS, NP, SS, GP, PF, AC))
CONTRIBUTORY = frozenset((DE, TS, NP, SS, GP))

# What raised the event: it decides the pushed return address, privilege checks and error codes.
EXTERNAL = "hw"          # an interrupt line (PIC/APIC): EXT bit set in error codes
SOFTWARE = "int"         # INT n / INT3 / INTO: gate DPL must allow CPL; returns after the instruction
EXCEPTION = "exc"        # a fault or trap the processor raised

CR4_PSE, CR4_PAE = 1 << 4, 1 << 5
CR0_WP = 1 << 16
PTE_P, PTE_W, PTE_U, PTE_A, PTE_D, PTE_PS = 1, 2, 4, 0x20, 0x40, 0x80
PF_PROT, PF_WRITE, PF_USER = 1, 2, 4
ADDR_MASK = 0x000FFFFFFFFFF000


class CpuFault(Exception):
    """An exception raised while delivering another event."""

    def __init__(self, vector: int, error_code: int = 0, cr2: int | None = None):
        super().__init__(vector, error_code)
        self.vector, self.error_code, self.cr2 = vector, error_code, cr2


class UnsupportedGuestFeature(Exception):
    """Guest state the software accelerator does not model (a task gate in the IDT): the VM stops
    with this message in its log rather than run on wrongly."""


class TripleFault(Exception):
    """Delivery of a double fault faulted: the processor shuts down."""


class PhysicalMemory:
    """Guest-physical reads and writes for descriptor tables, page tables and stacks: aligned
    entries of RAM straight from the mapping, everything else through read/write."""

    def __init__(self, read, write, ram_offset=None, ram_buffer=None):
        self.read = read      # (gpa, size) -> bytes
        self.write = write    # (gpa, data) -> None
        self._ram_offset = ram_offset     # gpa -> offset in ram_buffer, or None
        self._u64 = memoryview(ram_buffer).cast("Q") if ram_buffer is not None else None
        self._u32 = memoryview(ram_buffer).cast("I") if ram_buffer is not None else None

    def read_u32(self, gpa: int) -> int:
        if self._u32 is not None and not gpa & 3:
            offset = self._ram_offset(gpa)
            if offset is not None:
                return self._u32[offset >> 2]
        return int.from_bytes(self.read(gpa, 4), "little")

    def read_u64(self, gpa: int) -> int:
        if self._u64 is not None and not gpa & 7:
            offset = self._ram_offset(gpa)
            if offset is not None:
                return self._u64[offset >> 3]
        return int.from_bytes(self.read(gpa, 8), "little")

    def write_u32(self, gpa: int, value: int) -> None:
        self.write(gpa, value.to_bytes(4, "little"))


class Delivery:
    """Delivers events into one processor's state (the live CPUX86State of the engine)."""

    def __init__(self, env: CPUX86State, memory: PhysicalMemory, read_eflags):
        self.env = env
        self.mem = memory
        self.read_eflags = read_eflags   # () -> int: EFLAGS with the lazily kept condition codes
        # Page walks already done: (paging mode, CR3, linear page, write, user) -> (frame, the
        # (address, value) of each entry walked). An entry is used again only while every one of
        # those entries still holds its value, so guest page-table changes need no invalidation.
        self._walks: dict[tuple, tuple[int, tuple]] = {}

    # -- the double-fault rules ----------------------------------------------------------------
    def deliver(self, vector: int, source: str, error_code: int = 0, insn_length=0) -> None:
        """Deliver one event, turning faults during delivery into #DF or a triple fault.

        For a software interrupt EIP already points after the INT instruction; `insn_length` (an
        int, or a callable asked only when needed) says how far back it starts, because a fault
        while delivering it is reported on the INT itself."""
        env = self.env
        while True:
            try:
                self._deliver_once(vector, source, error_code)
                env.old_exception = -1   # Unicorn never clears it: stale values fake #DF
                return
            except CpuFault as fault:
                if fault.cr2 is not None:
                    env.cr[2] = fault.cr2
                if source == SOFTWARE:
                    back = insn_length() if callable(insn_length) else insn_length
                    env.eip = (env.eip - back) & 0xFFFFFFFFFFFFFFFF
                if vector == DF and source == EXCEPTION:
                    raise TripleFault() from None
                first_pf_or_contrib = source == EXCEPTION and (vector == PF or vector in CONTRIBUTORY)
                if first_pf_or_contrib and (fault.vector in CONTRIBUTORY or (vector == PF and fault.vector == PF)):
                    vector, source, error_code = DF, EXCEPTION, 0
                else:
                    vector, source, error_code = fault.vector, EXCEPTION, fault.error_code

    def _deliver_once(self, vector: int, source: str, error_code: int) -> None:
        env = self.env
        if not env.cr[0] & CR0_PE:
            self._deliver_real(vector)
        elif env.hflags & HF_LMA:
            self._deliver_long(vector, source, error_code)
        else:
            self._deliver_protected(vector, source, error_code)

    # -- real mode -----------------------------------------------------------------------------
    def _deliver_real(self, vector: int) -> None:
        env = self.env
        if vector * 4 + 3 > env.idt.limit:
            raise CpuFault(GP, vector * 8 + 2)
        entry = self.mem.read_u32(env.idt.base + vector * 4)
        ss = env.segs[R_SS]
        sp = env.regs[4] & 0xFFFF
        frame = struct.pack("<HHH", env.eip & 0xFFFF, env.segs[R_CS].selector, self.read_eflags() & 0xFFFF)
        sp = (sp - 6) & 0xFFFF
        self._write_real_stack(ss.base, sp, frame)
        env.regs[4] = (env.regs[4] & ~0xFFFF) | sp
        selector = entry >> 16
        cs = env.segs[R_CS]
        cs.selector, cs.base = selector, selector << 4   # real mode changes only these two
        env.eip = entry & 0xFFFF
        set_eflags(env, self.read_eflags() & ~(IF_FLAG | TF_FLAG | AC_FLAG | RF_FLAG))

    def _write_real_stack(self, base: int, sp: int, frame: bytes) -> None:
        if sp + len(frame) <= 0x10000:
            self.mem.write(base + sp, frame)
            return
        for i, byte in enumerate(frame):   # the 16-bit stack pointer wraps inside the segment
            self.mem.write(base + ((sp + i) & 0xFFFF), bytes((byte,)))

    # -- protected mode (32-bit IDT) --------------------------------------------------------------
    def _deliver_protected(self, vector: int, source: str, error_code: int) -> None:
        env = self.env
        ext = 1 if source == EXTERNAL else 0
        gate_error = vector * 8 + 2 + ext
        if vector * 8 + 7 > env.idt.limit:
            raise CpuFault(GP, gate_error)
        low, high = self._read_descriptor_pair(env.idt.base + vector * 8)
        gate_type = (high >> 8) & 0x1F
        if gate_type == 5:
            raise UnsupportedGuestFeature(f"vector {vector:#x} goes through a task gate, which the tcg "
                                          "accelerator does not model (use kvm)")
        if gate_type not in (6, 7, 14, 15):
            raise CpuFault(GP, gate_error)
        cpl = env.hflags & HF_CPL_MASK
        if source == SOFTWARE and ((high >> DESC_DPL_SHIFT) & 3) < cpl:
            raise CpuFault(GP, gate_error)
        if not high & DESC_P:
            raise CpuFault(NP, gate_error)
        selector = low >> 16
        offset = (high & 0xFFFF0000) | (low & 0xFFFF)
        cs_low, cs_high = self._load_code_descriptor(selector, cpl, ext)
        dpl = (cs_high >> DESC_DPL_SHIFT) & 3
        is32 = gate_type >= 14
        vm86 = bool(env.eflags & VM_FLAG)
        eflags = self.read_eflags()

        if not cs_high & DESC_C and dpl < cpl:
            if vm86 and dpl != 0:
                raise CpuFault(GP, selector & 0xFFFC)
            ss_sel, esp = self._stack_from_tss32(dpl)
            ss_low, ss_high = self._load_stack_descriptor(ss_sel, dpl)
            ss_base = descriptor_base(ss_low, ss_high)
            sp_mask = 0xFFFFFFFF if ss_high & DESC_B else 0xFFFF
            words = []
            if vm86:
                words += [env.segs[R_GS].selector, env.segs[R_FS].selector,
                          env.segs[R_DS].selector, env.segs[R_ES].selector]
            words += [env.segs[R_SS].selector, env.regs[4]]
            new_stack = (ss_sel, ss_base, descriptor_limit(ss_low, ss_high), descriptor_flags(ss_high))
        else:
            if vm86 or (cs_high & DESC_C and dpl > cpl):
                raise CpuFault(GP, selector & 0xFFFC)
            dpl = cpl
            ss = env.segs[R_SS]
            ss_base, esp = ss.base, env.regs[4]
            sp_mask = 0xFFFFFFFF if ss.flags & DESC_B else 0xFFFF
            words, new_stack = [], None
        return_eip = env.eip
        words += [eflags, env.segs[R_CS].selector, return_eip]
        if source == EXCEPTION and vector in WITH_ERROR_CODE:
            words.append(error_code)

        width = 4 if is32 else 2
        frame = b"".join((w & ((1 << (8 * width)) - 1)).to_bytes(width, "little") for w in reversed(words))
        new_sp = (esp - len(frame)) & sp_mask
        user = dpl == 3
        self._write_linear_checked(ss_base + new_sp, frame, user, stack_fault=True)

        # Commit: nothing below can fault.
        if new_stack:
            sel, base, limit, flags = new_stack
            if vm86:
                for seg in (R_ES, R_DS, R_FS, R_GS):
                    load_segment_cache(env, seg, 0, 0, 0, 0)
            load_segment_cache(env, R_SS, (sel & ~3) | dpl, base, limit, flags)
        env.regs[4] = (env.regs[4] & ~sp_mask) | new_sp
        load_segment_cache(env, R_CS, (selector & ~3) | dpl, descriptor_base(cs_low, cs_high),
                           descriptor_limit(cs_low, cs_high), descriptor_flags(cs_high))
        env.eip = offset if is32 else offset & 0xFFFF
        cleared = TF_FLAG | VM_FLAG | RF_FLAG | NT_FLAG | (IF_FLAG if gate_type in (6, 14) else 0)
        set_eflags(env, eflags & ~cleared)

    def _stack_from_tss32(self, dpl: int) -> tuple[int, int]:
        tr = self.env.tr
        if not tr.flags & DESC_P:
            raise CpuFault(TS, tr.selector & 0xFFFC)
        shift = 1 if (tr.flags >> 8) & 8 else 0        # 32-bit TSS: 4-byte ESP, 16-bit: 2-byte SP
        index = (dpl * 4 + 2) << shift
        if index + (4 << shift) - 1 > tr.limit:
            raise CpuFault(TS, tr.selector & 0xFFFC)
        raw = self._read_linear(tr.base + index, 4 << shift, user=False)
        if shift:
            esp, ss = struct.unpack("<IH", raw[:6])
        else:
            esp, ss = struct.unpack("<HH", raw)
        return ss, esp

    # -- long mode (64-bit IDT) ----------------------------------------------------------------------
    def _deliver_long(self, vector: int, source: str, error_code: int) -> None:
        env = self.env
        ext = 1 if source == EXTERNAL else 0
        gate_error = vector * 16 + 2 + ext
        if vector * 16 + 15 > env.idt.limit:
            raise CpuFault(GP, gate_error)
        raw = self._read_linear(env.idt.base + vector * 16, 16, user=False)
        low, high, upper, _ = struct.unpack("<IIII", raw)
        gate_type = (high >> 8) & 0x1F
        if gate_type not in (14, 15):
            raise CpuFault(GP, gate_error)
        cpl = env.hflags & HF_CPL_MASK
        if source == SOFTWARE and ((high >> DESC_DPL_SHIFT) & 3) < cpl:
            raise CpuFault(GP, gate_error)
        if not high & DESC_P:
            raise CpuFault(NP, gate_error)
        selector = low >> 16
        offset = (upper << 32) | (high & 0xFFFF0000) | (low & 0xFFFF)
        ist = high & 7
        cs_low, cs_high = self._load_code_descriptor(selector, cpl, ext)
        if not cs_high & DESC_L or cs_high & DESC_B:
            raise CpuFault(GP, selector & 0xFFFC)
        dpl = cpl if cs_high & DESC_C else (cs_high >> DESC_DPL_SHIFT) & 3
        if dpl < cpl or ist:
            rsp = self._stack_from_tss64(ist + 3 if ist else dpl)
            new_stack = True
        else:
            if env.eflags & VM_FLAG:
                raise CpuFault(GP, selector & 0xFFFC)
            rsp = env.regs[4]
            new_stack = False
        rsp &= ~0xF
        words = [env.segs[R_SS].selector, env.regs[4], self.read_eflags(), env.segs[R_CS].selector, env.eip]
        if source == EXCEPTION and vector in WITH_ERROR_CODE:
            words.append(error_code)
        frame = b"".join((w & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little") for w in reversed(words))
        rsp = (rsp - len(frame)) & 0xFFFFFFFFFFFFFFFF
        self._write_linear_checked(rsp, frame, dpl == 3, stack_fault=True)

        eflags = words[2]
        if new_stack:
            load_segment_cache(env, R_SS, dpl, 0, 0, dpl << DESC_DPL_SHIFT)   # a null SS with RPL = CPL
        env.regs[4] = rsp
        load_segment_cache(env, R_CS, (selector & ~3) | dpl, descriptor_base(cs_low, cs_high),
                           descriptor_limit(cs_low, cs_high), descriptor_flags(cs_high))
        env.eip = offset
        cleared = TF_FLAG | VM_FLAG | RF_FLAG | NT_FLAG | (IF_FLAG if gate_type == 14 else 0)
        set_eflags(env, eflags & ~cleared)

    def _stack_from_tss64(self, level: int) -> int:
        tr = self.env.tr
        index = 8 * level + 4
        if not tr.flags & DESC_P or index + 7 > tr.limit:
            raise CpuFault(TS, tr.selector & 0xFFFC)
        return int.from_bytes(self._read_linear(tr.base + index, 8, user=False), "little")

    # -- descriptors -----------------------------------------------------------------------------
    def _read_descriptor_pair(self, linear: int) -> tuple[int, int]:
        return struct.unpack("<II", self._read_linear(linear, 8, user=False))

    def _descriptor(self, selector: int, error: int) -> tuple[int, int]:
        env = self.env
        table = env.ldt if selector & 4 else env.gdt
        index = selector & ~7
        if index + 7 > table.limit:
            raise CpuFault(GP, error)
        return self._read_descriptor_pair(table.base + index)

    def _load_code_descriptor(self, selector: int, cpl: int, ext: int) -> tuple[int, int]:
        if selector & 0xFFFC == 0:
            raise CpuFault(GP, ext)
        error = (selector & 0xFFFC) | ext
        low, high = self._descriptor(selector, error)
        if not high & DESC_S or not high & DESC_CS:
            raise CpuFault(GP, error)
        if (high >> DESC_DPL_SHIFT) & 3 > cpl:
            raise CpuFault(GP, error)
        if not high & DESC_P:
            raise CpuFault(NP, error)
        return low, high

    def _load_stack_descriptor(self, selector: int, dpl: int) -> tuple[int, int]:
        error = selector & 0xFFFC
        if error == 0:
            raise CpuFault(TS, 0)
        if selector & 3 != dpl:
            raise CpuFault(TS, error)
        low, high = self._descriptor(selector, error)
        if ((high >> DESC_DPL_SHIFT) & 3) != dpl or not high & DESC_S or high & DESC_CS or not high & DESC_W:
            raise CpuFault(TS, error)
        if not high & DESC_P:
            raise CpuFault(SS, error)
        return low, high

    # -- linear memory -------------------------------------------------------------------------
    def _read_linear(self, linear: int, size: int, user: bool) -> bytes:
        out = b""
        while size:
            chunk = min(size, 0x1000 - (linear & 0xFFF))
            out += self.mem.read(self.translate(linear, False, user), chunk)
            linear, size = linear + chunk, size - chunk
        return out

    def translate_write(self, linear: int, length: int, user: bool) -> list[tuple[int, int]]:
        """(guest-physical address, length) of each page piece of a write; #PF if one is missing."""
        pieces, pos = [], 0
        while pos < length:
            chunk = min(length - pos, 0x1000 - ((linear + pos) & 0xFFF))
            pieces.append((self.translate(linear + pos, True, user), chunk))
            pos += chunk
        return pieces

    def _write_linear_checked(self, linear: int, data: bytes, user: bool, stack_fault: bool) -> None:
        """Translate every page first (a fault must leave memory untouched), then write."""
        pos = 0
        for gpa, length in self.translate_write(linear, len(data), user):
            self.mem.write(gpa, data[pos:pos + length])
            pos += length

    def translate(self, linear: int, write: bool, user: bool) -> int:
        """Walk the guest page tables like the MMU, setting accessed/dirty bits; #PF on failure."""
        env = self.env
        cr0 = env.cr[0]
        if not cr0 & CR0_PG:
            return linear & 0xFFFFFFFF
        key = (env.cr[3], env.cr[4] & (CR4_PSE | CR4_PAE), env.hflags & HF_LMA, cr0 & CR0_WP,
               linear >> 12, write, user)
        cached = self._walks.get(key)
        if cached is not None:
            frame, walked = cached
            read = self.mem.read_u64
            if all(read(address) == value for address, value in walked):
                return frame | (linear & 0xFFF)
        physical, walked = self._walk(linear, write, user)
        if len(self._walks) >= 4096:
            self._walks.clear()
        self._walks[key] = (physical & ~0xFFF, walked)
        return physical

    def _walk(self, linear: int, write: bool, user: bool) -> tuple[int, tuple]:
        """The page walk itself: the physical address and the (address, 8-byte value after the
        walk) of each paging-structure entry it read."""
        env = self.env
        mem = self.mem
        pdpt = ()
        if env.hflags & HF_LMA:
            levels, wide, table = (39, 30, 21, 12), True, env.cr[3] & ADDR_MASK
        elif env.cr[4] & CR4_PAE:
            pdpte_addr = (env.cr[3] & 0xFFFFFFE0) + ((linear >> 30) & 3) * 8
            pdpte = mem.read_u64(pdpte_addr)
            if not pdpte & PTE_P:
                self._page_fault(linear, False, write, user)
            levels, wide, table = (21, 12), True, pdpte & ADDR_MASK
            pdpt = ((pdpte_addr, pdpte),)
        else:
            linear &= 0xFFFFFFFF
            levels, wide, table = (22, 12), False, env.cr[3] & 0xFFFFF000
        rights = PTE_W | PTE_U
        walked = []
        for shift in levels:
            index_bits = 0x3FF if not wide else 0x1FF
            entry_addr = table + ((linear >> shift) & index_bits) * (8 if wide else 4)
            entry = mem.read_u64(entry_addr) if wide else mem.read_u32(entry_addr)
            if not entry & PTE_P:
                self._page_fault(linear, False, write, user)
            rights &= entry
            walked.append((entry_addr, entry))
            large = shift != 12 and entry & PTE_PS and (wide or env.cr[4] & CR4_PSE)
            if shift == 12 or large:
                frame_mask = (ADDR_MASK if wide else 0xFFFFF000) & ~((1 << shift) - 1)
                physical = (entry & frame_mask) | (linear & ((1 << shift) - 1))
                break
            table = entry & (ADDR_MASK if wide else 0xFFFFF000)
        if user and not rights & PTE_U:
            self._page_fault(linear, True, write, user)
        if write and not rights & PTE_W and (user or env.cr[0] & CR0_WP):
            self._page_fault(linear, True, write, user)
        for n, (entry_addr, entry) in enumerate(walked):
            update = PTE_A | (PTE_D if write and n == len(walked) - 1 else 0)
            if entry & update != update:
                mem.write_u32(entry_addr, (entry | update) & 0xFFFFFFFF)
        # What a later walk must find again, as 8-byte words (a 4-byte entry and its neighbour)
        words = {address & ~7 for address, _ in walked}
        return physical, pdpt + tuple((address, mem.read_u64(address)) for address in sorted(words))

    @staticmethod
    def _page_fault(linear: int, present: bool, write: bool, user: bool):
        code = (PF_PROT if present else 0) | (PF_WRITE if write else 0) | (PF_USER if user else 0)
        raise CpuFault(PF, code, cr2=linear)
