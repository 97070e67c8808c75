; ips_alu.asm -- guest instructions per second, ALU loop, 64-bit long mode.
;
; MARK 'S', then ITERS iterations of a 6-instruction loop (add/xor/rol/add/dec/jnz, registers
; only), MARK 'E', exit 0. Instructions executed between the marks: 6 * ITERS + 2 (the mov/out of
; MARK 'E' and the mov ecx before the loop are not counted: noise).

%include "common.inc"
%include "bench.inc"

%ifndef ITERS
%define ITERS 1000000
%endif

        START_LM64
        mov     rbx, 0x9E3779B97F4A7C15
        mov     rdx, 1
        mov     rcx, ITERS
        MARK    'S'
        align   16
.l:     add     rax, rbx
        xor     rbx, rax
        rol     rax, 7
        add     rdx, rax
        dec     rcx
        jnz     .l
        MARK    'E'
        EXIT    0

        END_IMAGE
