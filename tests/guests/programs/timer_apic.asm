; timer_apic.asm -- local APIC timer in periodic mode, in protected mode.
;
; IA32_APIC_BASE = 0xFEE00000 (enabled), SVR software enable (spurious vector 0xFF), TPR 0,
; divide configuration APIC_DIVIDE (encoded; default 0x3 = divide by 16), LVT timer = vector 0x40
; periodic, initial count APIC_COUNT (62500: 1 GHz / 16 / 62500 = 1000 Hz, the rate of both QEMU's
; and KVM's APIC timer). The current-count register must count down. The handler counts
; interrupts, checks IF=0, writes EOI; every TICKS_PER_CHAR interrupts it writes one 'a' to the
; debug port (the test measures the rate from the host timestamps). Stops after CHARS characters.

%include "common.inc"

%ifndef APIC_DIVIDE
%define APIC_DIVIDE 0x3
%endif
%ifndef APIC_COUNT
%define APIC_COUNT 62500
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
        SET_GATE32 0x40, apic_handler, INT_GATE
        SET_GATE32 0xFF, spurious_handler, INT_GATE
        mov     ecx, 0x1B                       ; IA32_APIC_BASE
        rdmsr
        mov     ebx, eax
        and     ebx, 0xFFFFF000
        CHECK   ebx, LAPIC, "APIC base address"
        or      eax, 1 << 11
        wrmsr
        mov     eax, [LAPIC + 0x30]             ; version register
        and     eax, 0xFF
        cmp     eax, 0x10
        jae     .ver_ok
        FAIL    "APIC version register (not an integrated APIC)"
.ver_ok:
        mov     dword [LAPIC + 0xF0], 0x1FF     ; SVR: enable, spurious vector 0xFF
        mov     dword [LAPIC + 0x80], 0         ; TPR
        PRINT   "APIC divide="
        mov     eax, APIC_DIVIDE
        call    dec32
        PRINT   " count="
        mov     eax, APIC_COUNT
        call    dec32
        PRINT   " ticks/char="
        mov     eax, TICKS_PER_CHAR
        call    dec32
        PRINT   " chars="
        mov     eax, CHARS
        call    dec32
        PRINT   10
        mov     dword [v_countdown], TICKS_PER_CHAR
        mov     dword [LAPIC + 0x3E0], APIC_DIVIDE
        mov     dword [LAPIC + 0x320], (1 << 17) | 0x40     ; periodic, vector 0x40
        mov     dword [LAPIC + 0x380], APIC_COUNT
        mov     eax, [LAPIC + 0x320]
        CHECK   eax, (1 << 17) | 0x40, "APIC LVT timer readback"
        mov     eax, [LAPIC + 0x390]            ; current count
        cmp     eax, APIC_COUNT
        jbe     .cc1
        FAIL    "APIC current count above the initial count"
.cc1:   mov     ecx, 100000
.spin:  mov     ebx, [LAPIC + 0x390]
        cmp     ebx, eax
        jne     .cc2
        loop    .spin
        FAIL    "APIC current count does not change"
.cc2:   PRINT   "APIC timer counting ok", 10
        sti
.wait:  hlt
        cmp     dword [v_chars], CHARS
        jb      .wait
        cli
        mov     dword [LAPIC + 0x320], (1 << 16) | 0x40     ; mask
        mov     dword [LAPIC + 0x380], 0
        PRINT   10
        CHECK   dword [v_if_bad], 0, "APIC: IF set in the interrupt handler"
        PRINT   "APIC ticks="
        mov     eax, [v_ticks]
        call    dec32
        PRINT   10
        PRINT   "PASS", 10
        EXIT    0

apic_handler:
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
        mov     al, 'a'
        out     0xE9, al
        inc     dword [v_chars]
.eoi:   mov     dword [LAPIC + 0xB0], 0
        pop     eax
        iretd

spurious_handler:                       ; no EOI for the spurious vector
        iretd

        END_IMAGE
