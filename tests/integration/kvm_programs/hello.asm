; Real mode: print a line to the debug port 0xE9, exit with code 0 through port 0xF4.
        bits 16
        org 0
start:  cli
        xor ax, ax
        mov ss, ax
        mov sp, 0x7000
        mov ax, cs
        mov ds, ax
        mov si, msg
.next:  lodsb
        test al, al
        jz .done
        out 0xE9, al
        jmp .next
.done:  mov al, 0
        out 0xF4, al
.halt:  hlt
        jmp .halt
msg:    db "Hello from KVM", 10, 0

%include "reset_vector.inc"
