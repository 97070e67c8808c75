; 32-bit protected mode: stores of 1, 2 and 4 bytes and a 4-byte load in the VGA window (no memory
; slot: MMIO exits to the bus); the load's bytes go to the debug port. Then a store to the firmware ROM
; at 4 GiB - 64 KiB (a read-only slot: dropped) and a load showing the ROM byte unchanged; exit code 0.
        bits 16
        org 0
%include "protected_mode.inc"
start:  ENTER_PROTECTED_MODE
        mov byte [0xA0000], 0x5A
        mov word [0xA0010], 0x1234
        mov dword [0xA0020], 0xDEADBEEF
        mov ebx, [0xA0040]
        mov ecx, 4
.bytes: mov al, bl
        out 0xE9, al
        shr ebx, 8
        loop .bytes
        mov byte [0xFFFF0000], 0x77
        mov al, [0xFFFF0000]
        out 0xE9, al
        mov al, 0
        out 0xF4, al
.halt:  hlt
        jmp .halt
        bits 16

%include "reset_vector.inc"
