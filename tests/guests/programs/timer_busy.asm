; timer_busy.asm -- the local APIC timer interrupts guest code that never exits to the VMM.
;
; Real mode (so that every accelerator, the host's software KVM included, runs it), with FS
; reaching the APIC page through a 4 GiB segment limit ("unreal mode"). The APIC timer (divide by
; 16, initial count APIC_COUNT: 1000 Hz at QEMU's and KVM's 1 GHz APIC clock) interrupts through
; IVT vector 0x40 while the processor runs code that does no I/O at all, so only the timer can take
; control from it:
;   1. periodic timer, a tight loop with IF=1, for BUSY_TICKS ticks;
;   2. one-shot timer, MASKED_ROUNDS times: CLI, arm the timer, wait until its vector is pending in
;      IRR, STI, then a tight loop until the handler has run (pending while masked, then nothing
;      but the loop: the case where Linux's one-shot tick froze the software accelerator);
;   3. periodic timer, REP MOVSD of 32 KiB blocks over and over, for BUSY_TICKS ticks.
; Each phase ends with a line ("busy loop ok", ...) whose host timestamp shows the tick rate.

%include "common.inc"

%ifndef BUSY_TICKS
%define BUSY_TICKS 200
%endif
%ifndef MASKED_ROUNDS
%define MASKED_ROUNDS 20
%endif
%ifndef APIC_COUNT
%define APIC_COUNT 62500
%endif
TIMER_VECTOR    equ 0x40
PERIODIC        equ 1 << 17

v_ticks         equ VARS + 0x00
v_round         equ VARS + 0x04
v_if_bad        equ VARS + 0x08
COPY_SRC_SEG    equ 0x1000
COPY_DST_SEG    equ 0x2000
COPY_DWORDS     equ 0x2000              ; 32 KiB

        START_RM
        mov     di, VARS
        mov     cx, 0x100
        xor     ax, ax
        rep stosb
        call    rm_fill_ivt
        mov     word [TIMER_VECTOR * 4], timer_handler - $$
        mov     word [0xFF * 4], spurious_handler - $$
        call    unreal_fs
        mov     ecx, 0x1B                       ; IA32_APIC_BASE: globally enabled
        rdmsr
        or      eax, 1 << 11
        wrmsr
        mov     dword [fs:dword LAPIC + 0xF0], 0x1FF    ; SVR: enable, spurious vector 0xFF
        mov     dword [fs:dword LAPIC + 0x80], 0        ; TPR
        mov     dword [fs:dword LAPIC + 0x3E0], 0x3     ; divide by 16
        PRINT   "busy start", 10

        ; ---- 1. a tight loop ------------------------------------------------------------------
        mov     dword [fs:dword LAPIC + 0x320], PERIODIC | TIMER_VECTOR
        mov     dword [fs:dword LAPIC + 0x380], APIC_COUNT
        sti
        mov     eax, [v_ticks]
        add     eax, BUSY_TICKS
.loop:  cmp     [v_ticks], eax
        jb      .loop
        cli
        mov     dword [fs:dword LAPIC + 0x380], 0       ; stop the timer
        PRINT   "busy loop ok", 10

        ; ---- 2. pending while masked, then a tight loop -----------------------------------------
        mov     dword [fs:dword LAPIC + 0x320], TIMER_VECTOR    ; one-shot
        mov     dword [v_round], 0
.round: cli
        mov     dword [fs:dword LAPIC + 0x380], APIC_COUNT
.pend:  test    dword [fs:dword LAPIC + 0x200 + (TIMER_VECTOR / 32) * 0x10], 1 << (TIMER_VECTOR % 32)
        jz      .pend
        mov     eax, [v_ticks]
        sti
.after: cmp     [v_ticks], eax
        je      .after
        inc     dword [v_round]
        cmp     dword [v_round], MASKED_ROUNDS
        jb      .round
        cli
        PRINT   "busy masked ok", 10

        ; ---- 3. string instructions -------------------------------------------------------------
        mov     dword [fs:dword LAPIC + 0x320], PERIODIC | TIMER_VECTOR
        mov     dword [fs:dword LAPIC + 0x380], APIC_COUNT
        sti
        mov     ebx, [v_ticks]
        add     ebx, BUSY_TICKS
.copy:  push    ds
        mov     ax, COPY_SRC_SEG
        mov     ds, ax
        mov     ax, COPY_DST_SEG
        mov     es, ax
        xor     si, si
        xor     di, di
        mov     cx, COPY_DWORDS
        cld
        rep     movsd
        pop     ds
        cmp     [v_ticks], ebx
        jb      .copy
        cli
        mov     dword [fs:dword LAPIC + 0x320], (1 << 16) | TIMER_VECTOR   ; masked
        mov     dword [fs:dword LAPIC + 0x380], 0
        xor     ax, ax
        mov     es, ax
        PRINT   "busy rep ok", 10

        CHECK   word [v_if_bad], 0, "busy: IF set in the interrupt handler"
        PRINT   "PASS", 10
        EXIT    0

timer_handler:
        push    ax
        pushf
        pop     ax
        test    ax, 0x200
        jz      .if_ok
        inc     word [fs:dword v_if_bad]    ; FS: DS is elsewhere during the copies
.if_ok: inc     dword [fs:dword v_ticks]
        mov     dword [fs:dword LAPIC + 0xB0], 0        ; EOI
        pop     ax
        iret

spurious_handler:                       ; no EOI for the spurious vector
        iret

; FS: base 0 with a 4 GiB limit, kept after the return to real mode (the APIC page is at 4 GiB - 20 MiB).
unreal_fs:
        push    eax
        o32 lgdt [cs:rom_gdtr - $$]
        mov     eax, cr0
        or      al, 1
        mov     cr0, eax
        jmp     dword SEL_CODE32:.pm
        bits    32
.pm:    mov     ax, SEL_DATA
        mov     fs, ax
        mov     ax, SEL_DATA16
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        jmp     word SEL_CODE16:(.pm16 - $$)
        bits    16
.pm16:  mov     eax, cr0
        and     al, 0xFE
        mov     cr0, eax
        jmp     0xF000:(.rm - $$)
.rm:    xor     ax, ax
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        pop     eax
        ret

        END_IMAGE
