; ips_mem.asm -- guest instructions per second, memory-copy loop, 64-bit long mode.
;
; Copies a BUF-byte buffer at 0x400000 to DST (default 0x423000; 2 MiB pages, RAM), PASSES times:
;   inner loop (8 instructions, 2 loads + 2 stores of 8 bytes):
;       mov rax,[rsi] / mov rdx,[rsi+8] / mov [rdi],rax / mov [rdi+8],rdx / add rsi,16 /
;       add rdi,16 / dec ecx / jnz
;   outer loop (5 instructions per pass): mov esi / mov edi / mov ecx / dec ebx / jnz
; Between MARK 'S' and MARK 'E': PASSES * (8 * BUF/16 + 5) instructions.
; Then, if REP=1 (default), MARK 'R', PASSES times `rep movsq` of the same buffer, MARK 'Q'
; (one rep movsq = BUF/8 iterations; reported as bytes per second).
; DST = 0x500000 makes every source page and its destination page share a slot of the softmmu TLB
; (page number mod 256): both QEMU and Unicorn then refill the TLB on nearly every access.

%include "common.inc"
%include "bench.inc"

%ifndef PASSES
%define PASSES 100
%endif
%ifndef REP_PASSES
%define REP_PASSES PASSES
%endif
%ifndef BUF
%define BUF 65536
%endif
SRC     equ 0x400000
%ifndef DST
%define DST 0x423000
%endif

        START_LM64
        mov     edi, SRC                        ; fill the source with something
        mov     ecx, BUF / 8
        mov     rax, 0x0123456789ABCDEF
.fill:  mov     [rdi], rax
        rol     rax, 3
        add     rdi, 8
        dec     ecx
        jnz     .fill

        mov     ebx, PASSES
        MARK    'S'
        align   16
.pass:  mov     esi, SRC
        mov     edi, DST
        mov     ecx, BUF / 16
.l:     mov     rax, [rsi]
        mov     rdx, [rsi + 8]
        mov     [rdi], rax
        mov     [rdi + 8], rdx
        add     rsi, 16
        add     rdi, 16
        dec     ecx
        jnz     .l
        dec     ebx
        jnz     .pass
        MARK    'E'
        mov     rax, [SRC + BUF - 8]
        CHECK   rax, [DST + BUF - 8], "copy loop: last qword"

%ifndef NO_REP
        mov     ebx, REP_PASSES
        cld
        MARK    'R'
.rpass: mov     esi, SRC
        mov     edi, DST
        mov     ecx, BUF / 8
        rep movsq
        dec     ebx
        jnz     .rpass
        MARK    'Q'
%endif
        EXIT    0

        END_IMAGE
