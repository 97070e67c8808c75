; timer_cost.asm -- the cost of external (LAPIC timer) interrupt delivery, 64-bit long mode.
;
; REPS times, alternating:
;   MARK 'a', ALU loop (ITERS x add/xor/rol/dec/jnz), MARK 'b'     timer masked: the baseline
;   MARK 'c', the same loop, MARK 'd'                               LAPIC timer periodic, vector
;                                                                   0x40, divide 1, initial count
;                                                                   APIC_COUNT (QEMU and our LAPIC
;                                                                   count at 1 GHz: APIC_COUNT ns)
; IF=1 throughout; the timer is armed and masked with IF=1, so nothing is ever left pending while
; interrupts are disabled. The handler counts ticks and writes EOI. At the end the tick count is
; printed in decimal after a 'T' ("T12345\n").
; Cost per tick = (sum(d - c) - sum(b - a)) / ticks; rate = ticks / sum(d - c).
; R15 = LAPIC base throughout (a disp32 of 0xFEE00000 would sign-extend in 64-bit code).

%include "common.inc"
%include "bench.inc"

%ifndef ITERS
%define ITERS 100000000
%endif
%ifndef APIC_COUNT
%define APIC_COUNT 1000000
%endif
%ifndef REPS
%define REPS 4
%endif

v_ticks         equ VARS + 0x00
v_reps          equ VARS + 0x08

        START_LM64
        SET_GATE64 0x40, timer_handler, INT_GATE
        SET_GATE64 0xFF, spurious_handler, INT_GATE
        mov     r15d, LAPIC
        mov     ecx, 0x1B                       ; IA32_APIC_BASE: make sure it is enabled
        rdmsr
        or      eax, 1 << 11
        wrmsr
        mov     dword [r15 + 0xF0], 0x1FF       ; SVR: enable, spurious vector 0xFF
        mov     dword [r15 + 0x80], 0           ; TPR
        mov     dword [r15 + 0x3E0], 0xB        ; divide by 1
        mov     dword [r15 + 0x320], (1 << 16) | (1 << 17) | 0x40   ; masked, periodic, vector 0x40
        mov     qword [v_ticks], 0
        mov     qword [v_reps], REPS
        sti

.rep:   MARK    'a'
        call    work
        MARK    'b'
        mov     dword [r15 + 0x320], (1 << 17) | 0x40               ; unmask
        mov     dword [r15 + 0x380], APIC_COUNT                     ; (re)start the period
        MARK    'c'
        call    work
        MARK    'd'
        mov     dword [r15 + 0x320], (1 << 16) | (1 << 17) | 0x40   ; mask (IF=1: a pending tick is taken)
        mov     dword [r15 + 0x380], 0                              ; stop
        dec     qword [v_reps]
        jnz     .rep

        cli
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
        mov     dword [r15 + 0xB0], 0           ; EOI
        iretq

spurious_handler:
        iretq

        END_IMAGE
