; Two processors. The BSP enters protected mode, enables its LAPIC and sends INIT + SIPI (vector 0xF0)
; to APIC ID 1; the AP starts in real mode at F000:0000 (this image's first byte), prints 'A' and its
; CPUID APIC ID, sets a flag in RAM and halts; the BSP waits for the flag, prints 'B', exits with 0.
        bits 16
        org 0
ap_entry:
        xor ax, ax
        mov ds, ax
        mov al, 'A'
        out 0xE9, al
        mov eax, 1
        cpuid
        shr ebx, 24
        mov al, bl
        add al, '0'
        out 0xE9, al
        mov byte [0x700], 1
.park:  cli
        hlt
        jmp .park

%include "protected_mode.inc"
start:  ENTER_PROTECTED_MODE
        mov byte [0x700], 0
        mov dword [0xFEE000F0], 0x1FF           ; spurious vector register: APIC software-enabled
        mov dword [0xFEE00310], 1 << 24         ; ICR high: destination APIC ID 1
        mov dword [0xFEE00300], 0x00004500      ; ICR low: INIT, assert
        mov dword [0xFEE00300], 0x000046F0      ; ICR low: start-up, vector 0xF0 -> 0xF0000
.wait:  pause
        cmp byte [0x700], 1
        jne .wait
        mov al, 'B'
        out 0xE9, al
        mov al, 0
        out 0xF4, al
.halt:  hlt
        jmp .halt
        bits 16

%include "reset_vector.inc"
