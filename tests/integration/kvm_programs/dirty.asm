; Real mode: one store to guest-physical 0x50010 (page 0x50, low RAM) and one to 0x101000 (page 0x101,
; the slot above 1 MiB, reached through FFFF:1010 since A20 is on); no stack use; exit code 0.
        bits 16
        org 0
start:  cli
        mov ax, 0x5000
        mov es, ax
        mov byte [es:0x10], 0x11
        mov ax, 0xFFFF
        mov es, ax
        mov byte [es:0x1010], 0x22
        mov al, 0
        out 0xF4, al
.halt:  hlt
        jmp .halt

%include "reset_vector.inc"
