; Real mode string I/O: `rep outsb` of 300 bytes to the debug port (KVM batches it into one exit),
; `rep insw` of 4 words from port 0x510 echoed back with `rep outsb`; then exit code 0.
        bits 16
        org 0
start:  cli
        cld
        mov ax, cs
        mov ds, ax
        xor ax, ax
        mov es, ax
        mov si, text
        mov cx, text_end - text
        mov dx, 0xE9
        rep outsb
        mov di, 0x800
        mov cx, 4
        mov dx, 0x510
        rep insw
        xor ax, ax
        mov ds, ax
        mov si, 0x800
        mov cx, 8
        mov dx, 0xE9
        rep outsb
        mov al, 0
        out 0xF4, al
.halt:  hlt
        jmp .halt

text:   times 30 db "0123456789"
text_end:

%include "reset_vector.inc"
