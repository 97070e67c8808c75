; counter.asm -- endless deterministic workload for snapshot/restore tests (long mode).
;
; Keeps a RAM buffer of BUF_DWORDS dwords at BUF (initially buf[i] = i * 0x9E3779B9) and a xorshift32
; state s (initially 0x12345678). For n = 1, 2, 3, ... forever:
;     8 times: s ^= s << 13; s ^= s >> 17; s ^= s << 5; buf[s & (BUF_DWORDS - 1)] += s
;     sum = 0; for each dword w of the buffer: sum = sum * 31 + w          (all mod 2^32)
;     print "n=<n in decimal> sum=<sum as 8 hex digits>\n"
;     with PACE (default 1): wait for the next PIT interrupt (PACE_DIVISOR, 11932 = 100 Hz)
; so the output is a pure function of the line count (tests/guests/build.py: counter_expected_lines).
; Interrupts stay enabled while it computes; the PIT handler only counts and sends EOI.

%include "common.inc"

%ifndef PACE
%define PACE 1
%endif
%ifndef PACE_DIVISOR
%define PACE_DIVISOR 11932
%endif
%ifndef BUF_DWORDS
%define BUF_DWORDS 8192
%endif

BUF             equ 0x400000
v_ticks         equ VARS + 0x00
v_last          equ VARS + 0x08

        START_LM64
        SET_GATE64 0x20, pit_handler, INT_GATE
        PRINT   "counter start", 10
        xor     ecx, ecx
.init:  mov     eax, ecx
        imul    eax, eax, 0x9E3779B9
        mov     [BUF + rcx * 4], eax
        inc     ecx
        cmp     ecx, BUF_DWORDS
        jb      .init
%if PACE
        mov     al, 0x34
        out     0x43, al
        mov     al, PACE_DIVISOR & 0xFF
        out     0x40, al
        mov     al, (PACE_DIVISOR >> 8) & 0xFF
        out     0x40, al
        mov     al, 0xFE
        out     0x21, al
        sti
%endif
        mov     r12d, 0x12345678                ; s
        mov     r13d, 1                         ; n
line:   mov     ecx, 8
.mod:   mov     eax, r12d
        shl     eax, 13
        xor     r12d, eax
        mov     eax, r12d
        shr     eax, 17
        xor     r12d, eax
        mov     eax, r12d
        shl     eax, 5
        xor     r12d, eax
        mov     eax, r12d
        and     eax, BUF_DWORDS - 1
        add     [BUF + rax * 4], r12d
        dec     ecx
        jnz     .mod
        xor     edx, edx                        ; sum
        xor     ecx, ecx
.sum:   imul    edx, edx, 31
        add     edx, [BUF + rcx * 4]
        inc     ecx
        cmp     ecx, BUF_DWORDS
        jb      .sum
        PRINT   "n="
        mov     rax, r13
        call    dec64
        PRINT   " sum="
        mov     eax, edx
        call    hex32_64
        PRINT   10
        inc     r13
%if PACE
.wait:  cli
        mov     rax, [v_ticks]
        cmp     rax, [v_last]
        jne     .go
        sti
        hlt
        jmp     .wait
.go:    mov     [v_last], rax
        sti
%endif
        jmp     line

pit_handler:
        inc     qword [v_ticks]
        push    rax
        mov     al, 0x20
        out     0x20, al
        pop     rax
        iretq

        END_IMAGE
