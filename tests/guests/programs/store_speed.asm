; store_speed.asm -- guest stores to RAM against register arithmetic, 64-bit long mode with paging.
;
; Between marks 'a' and 'b': ITERS iterations of 8 register instructions. Between 'c' and 'd': ITERS
; iterations of a copy loop of 8 instructions, 2 loads and 2 stores of 8 bytes (bench/programs/
; ips_mem.asm's), over a 64 KiB buffer. On a JIT whose stores take the fast path the two take
; about the same time; stock Unicorn 2.1.4 sends every store through its slow path.

%include "common.inc"

%ifndef ITERS
%define ITERS 16000000
%endif
SRC     equ 0x400000
DST     equ 0x423000
BUF     equ 65536

        START_LM64
        mov     al, 'a'
        out     0xE9, al
        mov     ecx, ITERS
        xor     eax, eax
.alu:   add     rax, rcx
        xor     rdx, rax
        add     rsi, 16
        add     rdi, 16
        rol     rdx, 3
        sub     rbx, rdx
        dec     ecx
        jnz     .alu
        mov     al, 'b'
        out     0xE9, al

        mov     al, 'c'
        out     0xE9, al
        mov     ebx, ITERS / (BUF / 16)
.pass:  mov     esi, SRC
        mov     edi, DST
        mov     ecx, BUF / 16
.copy:  mov     rax, [rsi]
        mov     rdx, [rsi + 8]
        mov     [rdi], rax
        mov     [rdi + 8], rdx
        add     rsi, 16
        add     rdi, 16
        dec     ecx
        jnz     .copy
        dec     ebx
        jnz     .pass
        mov     al, 'd'
        out     0xE9, al
        PRINT   10, "PASS", 10
        EXIT    0

        END_IMAGE
