; Real mode: counts boots in RAM (survives a reset) and in the firmware shadow (reloaded by a reset),
; prints "R<ram count>S<shadow count>", triple-faults on the first boot, exits with the count after.
        bits 16
        org 0
start:  cli
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7000
        inc byte [0x600]
        inc byte [cs:shadow_boots]
        mov al, 'R'
        out 0xE9, al
        mov al, [0x600]
        add al, '0'
        out 0xE9, al
        mov al, 'S'
        out 0xE9, al
        mov al, [cs:shadow_boots]
        add al, '0'
        out 0xE9, al
        cmp byte [0x600], 2
        jae .exit
        jmp fault
.exit:  mov al, [0x600]
        out 0xF4, al
.halt:  hlt
        jmp .halt

; An empty IDT in protected mode, then a selector beyond the GDT: #GP -> #DF -> shutdown. (The kvm_pvm
; emulator on the build machine ignores the real-mode IVT limit and cannot emulate int3.)
%include "protected_mode.inc"
fault:  ENTER_PROTECTED_MODE
        lidt [LINEAR + empty_idt]
        mov ax, 0x80
        mov ds, ax
        jmp $
        bits 16

shadow_boots: db 0
empty_idt:    dw 0
              dd 0

%include "reset_vector.inc"
