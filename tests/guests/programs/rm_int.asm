; rm_int.asm -- real mode: software interrupts, a real-mode fault and hardware IRQ0 through the IVT.
;
;  1. `int 0x42`: the handler sees every general register as set by the caller, the frame
;     IP:CS:FLAGS on the stack (IP = the instruction after the int), IF cleared; iret returns
;     after the int with the caller's FLAGS restored (CF, IF) and the handler's AX.
;  2. `int3` (one-byte 0xCC) through IVT[3].
;  3. #DE (`div` by zero) through IVT[0]: the frame IP points at the div itself.
;  4. IRQ0 (after the BIOS-style LAPIC virtual-wire setup, LINT0 = ExtINT): 8259 PICs initialised like a BIOS (ICW1-4, offsets 0x08/0x70), PIT channel 0 in
;     mode 2 with divisor IRQ_DIVISOR (1193 = 1 kHz), only IRQ0 unmasked, sti + hlt until
;     IRQ_COUNT interrupts have arrived at vector 8; the handler checks IF=0, its frame and the
;     PIC's in-service register (OCW3), then sends a non-specific EOI to port 0x20.

%include "common.inc"

%ifndef IRQ_COUNT
%define IRQ_COUNT 20
%endif
%ifndef IRQ_DIVISOR
%define IRQ_DIVISOR 1193
%endif

v_int42         equ VARS + 0x00         ; word: handler ran
v_int3          equ VARS + 0x02
v_de            equ VARS + 0x04
v_ticks         equ VARS + 0x06
v_isr_bad       equ VARS + 0x08
v_if_bad        equ VARS + 0x0A
v_frame_bad     equ VARS + 0x0C

        START_RM
        mov     di, VARS
        mov     cx, 0x100
        xor     ax, ax
        rep stosb
        call    rm_fill_ivt
        PRINT   "RM start", 10
        call    rm_apic_virtual_wire            ; BIOS POST: LAPIC LINT0 = ExtINT

        ; BIOS-like PIC setup: master at 0x08, slave at 0x70, everything masked for now.
        mov     al, 0x11
        out     0x20, al
        out     0xA0, al
        mov     al, 0x08
        out     0x21, al
        mov     al, 0x70
        out     0xA1, al
        mov     al, 0x04
        out     0x21, al
        mov     al, 0x02
        out     0xA1, al
        mov     al, 0x01
        out     0x21, al
        out     0xA1, al
        mov     al, 0xFF
        out     0x21, al
        out     0xA1, al
        in      al, 0x21
        xor     ah, ah
        CHECK   ax, 0xFF, "RM PIC IMR readback"
        PRINT   "RM PIC ok", 10

        ; ---- 1. int 0x42 ------------------------------------------------------------------
        mov     word [0x42 * 4], int42 - $$
        mov     word [0x42 * 4 + 2], 0xF000
        sti
        mov     ax, 0x1111
        mov     bx, 0x2222
        mov     cx, 0x3333
        mov     dx, 0x4444
        mov     si, 0x5555
        mov     di, 0x6666
        mov     bp, 0x7777
        stc
        int     0x42
int42_ret:
        jc      .cf_ok
        FAIL    "RM int 0x42: CF not restored by iret"
.cf_ok: pushf
        pop     ax
        test    ax, 0x200
        jnz     .if_ok
        FAIL    "RM int 0x42: IF not restored by iret"
.if_ok: CHECK   sp, 0x7000, "RM int 0x42: SP after iret"
        CHECK   word [v_int42], 1, "RM int 0x42: handler count"
        CHECK   bx, 0x2222, "RM int 0x42: BX after"
        CHECK   cx, 0x3333, "RM int 0x42: CX after"
        CHECK   dx, 0xABCD, "RM int 0x42: DX (handler result)"
        CHECK   bp, 0x7777, "RM int 0x42: BP after"
        cli
        PRINT   "RM int 0x42 ok", 10

        ; ---- 2. int3 ------------------------------------------------------------------------
        mov     word [3 * 4], int3_handler - $$
        mov     word [3 * 4 + 2], 0xF000
        int3
int3_ret:
        CHECK   word [v_int3], 1, "RM int3: handler count"
        PRINT   "RM int3 ok", 10

        ; ---- 3. #DE -------------------------------------------------------------------------
        mov     word [0 * 4], de_handler - $$
        mov     word [0 * 4 + 2], 0xF000
        mov     ax, 1
        xor     dx, dx
        xor     bx, bx
de_at:  div     bx
de_after:
        CHECK   word [v_de], 1, "RM #DE: handler count"
        PRINT   "RM #DE ok", 10

        ; ---- 4. IRQ0 from the PIT -------------------------------------------------------------
        mov     word [8 * 4], irq0_handler - $$
        mov     word [8 * 4 + 2], 0xF000
        mov     al, 0x34                        ; channel 0, lobyte/hibyte, mode 2, binary
        out     0x43, al
        mov     al, IRQ_DIVISOR & 0xFF
        out     0x40, al
        mov     al, IRQ_DIVISOR >> 8
        out     0x40, al
        mov     al, 0xFE                        ; unmask IRQ0 only
        out     0x21, al
        sti
.wait:  hlt
        cmp     word [v_ticks], IRQ_COUNT
        jb      .wait
        cli
        mov     al, 0xFF
        out     0x21, al
        CHECK   word [v_if_bad], 0, "RM IRQ0: IF set inside the handler"
        CHECK   word [v_frame_bad], 0, "RM IRQ0: frame CS is not F000"
        CHECK   word [v_isr_bad], 0, "RM IRQ0: PIC ISR bit 0 not set in the handler"
        PRINT   "RM IRQ0 x"
        mov     ax, IRQ_COUNT
        call    dec16
        PRINT   " ok", 10
        PRINT   "PASS", 10
        EXIT    0

; ---- handlers ---------------------------------------------------------------------------------
int42:
        CHECK   bp, 0x7777, "RM int 0x42: BP in handler"
        mov     bp, sp
        CHECK   ax, 0x1111, "RM int 0x42: AX in handler"
        CHECK   bx, 0x2222, "RM int 0x42: BX in handler"
        CHECK   cx, 0x3333, "RM int 0x42: CX in handler"
        CHECK   dx, 0x4444, "RM int 0x42: DX in handler"
        CHECK   si, 0x5555, "RM int 0x42: SI in handler"
        CHECK   di, 0x6666, "RM int 0x42: DI in handler"
        CHECK   sp, 0x7000 - 6, "RM int 0x42: SP in handler"
        CHECK   word [bp], int42_ret - $$, "RM int 0x42: frame IP"
        CHECK   word [bp + 2], 0xF000, "RM int 0x42: frame CS"
        mov     ax, [bp + 4]
        and     ax, 0x0201
        CHECK   ax, 0x0201, "RM int 0x42: frame FLAGS (IF, CF)"
        pushf
        pop     ax
        test    ax, 0x200
        jz      .if_ok
        FAIL    "RM int 0x42: IF set inside the handler"
.if_ok: inc     word [v_int42]
        mov     bp, 0x7777
        mov     dx, 0xABCD
        clc                                     ; iret restores the caller's CF anyway
        iret

int3_handler:
        mov     bp, sp
        CHECK   word [bp], int3_ret - $$, "RM int3: frame IP"
        inc     word [v_int3]
        iret

de_handler:
        mov     bp, sp
        CHECK   word [bp], de_at - $$, "RM #DE: frame IP (must point at the div)"
        mov     word [bp], de_after - $$
        inc     word [v_de]
        iret

irq0_handler:
        push    ax
        push    bp
        mov     bp, sp
        cmp     word [bp + 6], 0xF000
        je      .cs_ok
        inc     word [v_frame_bad]
.cs_ok: pushf
        pop     ax
        test    ax, 0x200
        jz      .if_ok
        inc     word [v_if_bad]
.if_ok: mov     al, 0x0B                        ; OCW3: read ISR
        out     0x20, al
        in      al, 0x20
        test    al, 1
        jnz     .isr_ok
        inc     word [v_isr_bad]
.isr_ok:
        mov     al, 0x0A                        ; OCW3: back to IRR
        out     0x20, al
        inc     word [v_ticks]
        mov     al, 0x20                        ; non-specific EOI
        out     0x20, al
        pop     bp
        pop     ax
        iret

        END_IMAGE
