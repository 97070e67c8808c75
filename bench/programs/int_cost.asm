; int_cost.asm -- the cost of one software interrupt delivery (`int 0x30`, handler = iret only).
;
; MODE=64 (default): 64-bit long mode, 16-byte IDT gate, handler `iretq`.
; MODE=32: 32-bit protected mode, no paging, 8-byte interrupt gate, handler `iretd`.
; MODE=16: real mode, IVT entry, handler `iret`.
; MARK 'A', N x (int 0x30 / dec ecx / jnz), MARK 'B', N x (dec ecx / jnz), MARK 'C', exit 0.
; Cost of one delivery + return = ((B - A) - (C - B)) / N.

%include "common.inc"
%include "bench.inc"

%ifndef MODE
%define MODE 64
%endif
%ifndef N
%define N 10000
%endif

%if MODE == 64
        START_LM64
        SET_GATE64 0x30, handler, INT_GATE
%elif MODE == 32
        START_PM32
        SET_GATE32 0x30, handler, INT_GATE
%else
        START_RM
        mov     word [0x30 * 4], handler - $$
        mov     word [0x30 * 4 + 2], 0xF000
%endif
        mov     ecx, N
        MARK    'A'
        align   16
.withint:
        int     0x30
        dec     ecx
        jnz     .withint
        MARK    'B'
        mov     ecx, N
        align   16
.without:
        dec     ecx
        jnz     .without
        MARK    'C'
        EXIT    0

handler:
%if MODE == 64
        iretq
%elif MODE == 32
        iretd
%else
        iret
%endif

        END_IMAGE
