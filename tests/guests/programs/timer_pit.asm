; timer_pit.asm -- PIT channel 0 at a programmed rate, IRQ0 through the 8259 in protected mode.
;
; PIC master at 0x20 (IRQ0 = vector 0x20, only IRQ0 unmasked), PIT channel 0 mode 2 with divisor
; PIT_DIVISOR (1193 -> 1193182/1193 = 1000.2 Hz). The handler counts interrupts, checks IF=0 and
; sends EOI; every TICKS_PER_CHAR interrupts it writes one 't' to the debug port, so that the test
; can measure the rate from the host timestamps of those bytes. Stops after CHARS characters.
; Output: "PIT divisor=1193 ticks/char=50 chars=21", a line of 't', "PIT ticks=1050", "PASS".

%include "common.inc"

%ifndef PIT_DIVISOR
%define PIT_DIVISOR 1193
%endif
%ifndef TICKS_PER_CHAR
%define TICKS_PER_CHAR 50
%endif
%ifndef CHARS
%define CHARS 21
%endif

v_ticks         equ VARS + 0x00
v_chars         equ VARS + 0x04
v_countdown     equ VARS + 0x08
v_if_bad        equ VARS + 0x0C

        START_PM32
        SET_GATE32 0x20, pit_handler, INT_GATE
        PRINT   "PIT divisor="
        mov     eax, PIT_DIVISOR
        call    dec32
        PRINT   " ticks/char="
        mov     eax, TICKS_PER_CHAR
        call    dec32
        PRINT   " chars="
        mov     eax, CHARS
        call    dec32
        PRINT   10
        mov     dword [v_countdown], TICKS_PER_CHAR
        mov     al, 0x34                        ; channel 0, lobyte/hibyte, mode 2 (rate generator)
        out     0x43, al
        mov     al, PIT_DIVISOR & 0xFF
        out     0x40, al
        mov     al, (PIT_DIVISOR >> 8) & 0xFF
        out     0x40, al
        mov     al, 0xFE                        ; unmask IRQ0
        out     0x21, al
        sti
.wait:  hlt
        cmp     dword [v_chars], CHARS
        jb      .wait
        cli
        mov     al, 0xFF
        out     0x21, al
        PRINT   10
        CHECK   dword [v_if_bad], 0, "PIT: IF set in the interrupt handler"
        PRINT   "PIT ticks="
        mov     eax, [v_ticks]
        call    dec32
        PRINT   10
        PRINT   "PASS", 10
        EXIT    0

pit_handler:
        push    eax
        pushfd
        pop     eax
        test    eax, 0x200
        jz      .if_ok
        inc     dword [v_if_bad]
.if_ok: inc     dword [v_ticks]
        dec     dword [v_countdown]
        jnz     .eoi
        mov     dword [v_countdown], TICKS_PER_CHAR
        cmp     dword [v_chars], CHARS
        jae     .eoi
        mov     al, 't'
        out     0xE9, al
        inc     dword [v_chars]
.eoi:   mov     al, 0x20
        out     0x20, al
        pop     eax
        iretd

        END_IMAGE
