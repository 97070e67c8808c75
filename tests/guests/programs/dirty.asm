; dirty.asm -- a guest that keeps writing non-zero data to its memory (teleport benchmark, long mode).
;
; Every PIT tick (100 Hz) it fills the next CHUNK_KIB KiB of a DIRTY_MIB MiB buffer at 16 MiB with
; the tick count (never zero), wrapping around: CHUNK_KIB KiB * 100/s of changed memory, forever.
; Prints "dirty start" once.

%include "common.inc"

%ifndef DIRTY_MIB
%define DIRTY_MIB 256
%endif
%ifndef CHUNK_KIB
%define CHUNK_KIB 1024
%endif

BUF             equ 0x1000000
v_ticks         equ VARS + 0x00
v_last          equ VARS + 0x08

        START_LM64
        SET_GATE64 0x20, pit_handler, INT_GATE
        PRINT   "dirty start", 10
        mov     al, 0x34                        ; PIT channel 0, rate generator, 100 Hz
        out     0x43, al
        mov     al, 11932 & 0xFF
        out     0x40, al
        mov     al, 11932 >> 8
        out     0x40, al
        mov     al, 0xFE
        out     0x21, al
        sti
        xor     ebx, ebx                        ; offset into the buffer
.tick:  cli
        mov     rax, [v_ticks]
        cmp     rax, [v_last]
        jne     .go
        sti
        hlt
        jmp     .tick
.go:    mov     [v_last], rax
        sti
        or      rax, 1                          ; never zero: these pages always carry data
        lea     rdi, [BUF + rbx]
        mov     ecx, CHUNK_KIB * 1024 / 8
        cld
        rep stosq
        add     ebx, CHUNK_KIB * 1024
        cmp     ebx, DIRTY_MIB * 1024 * 1024
        jb      .tick
        xor     ebx, ebx
        jmp     .tick

pit_handler:
        inc     qword [v_ticks]
        push    rax
        mov     al, 0x20
        out     0x20, al
        pop     rax
        iretq

        END_IMAGE
