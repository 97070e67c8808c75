; timer_cost.asm -- the cost of external (LAPIC timer) interrupt delivery, 64-bit long mode.
;
; The same ALU loop (ITERS x add/xor/rol/dec/jnz) runs twice:
;   MARK 'a' .. MARK 'b'   IF=0, timer off: the baseline
;   MARK 'c' .. MARK 'd'   IF=1, LAPIC timer periodic at vector 0x40 (divide 1, initial count
;                          APIC_COUNT: QEMU and our LAPIC count at 1 GHz, so APIC_COUNT ns per tick)
; R15 = LAPIC base throughout. The handler counts ticks and writes EOI. Afterwards the tick count is printed in decimal after
; a 'T' ("T12345\n"). Cost per tick = ((d - c) - (b - a)) / ticks; rate = ticks / (d - c).

%include "common.inc"
%include "bench.inc"

%ifndef ITERS
%define ITERS 100000000
%endif
%ifndef APIC_COUNT
%define APIC_COUNT 100000
%endif

v_ticks         equ VARS + 0x00

        START_LM64
        SET_GATE64 0x40, timer_handler, INT_GATE
        SET_GATE64 0xFF, spurious_handler, INT_GATE
        mov     r15d, LAPIC                     ; (a disp32 of 0xFEE00000 would sign-extend in 64-bit code)
        mov     ecx, 0x1B                       ; IA32_APIC_BASE: make sure it is enabled
        rdmsr
        or      eax, 1 << 11
        wrmsr
        mov     dword [r15 + 0xF0], 0x1FF     ; SVR: enable, spurious vector 0xFF
        mov     dword [r15 + 0x80], 0         ; TPR
        mov     qword [v_ticks], 0

        MARK    'a'
        call    work
        MARK    'b'
        mov     dword [r15 + 0x3E0], 0xB      ; divide by 1
        mov     dword [r15 + 0x320], (1 << 17) | 0x40     ; periodic, vector 0x40
        mov     dword [r15 + 0x380], APIC_COUNT
        sti
        MARK    'c'
        call    work
        MARK    'd'
        cli
        mov     dword [r15 + 0x320], (1 << 16) | 0x40     ; mask
        mov     dword [r15 + 0x380], 0
        PRINT   "T"
        mov     rax, [v_ticks]
        call    dec64
        PRINT   10
        EXIT    0

work:
        mov     rbx, 0x9E3779B97F4A7C15
        mov     rcx, ITERS
        align   16
.l:     add     rax, rbx
        xor     rbx, rax
        rol     rax, 7
        dec     rcx
        jnz     .l
        ret

timer_handler:
        inc     qword [v_ticks]
        mov     dword [r15 + 0xB0], 0         ; EOI
        iretq

spurious_handler:
        iretq

        END_IMAGE
