; Real mode with the in-kernel PIC and PIT: prints 'W' (the host then pulses GSI 1), takes IRQ 1 ('K'),
; then programs PIT channel 0 for 1 ms and takes three IRQ 0 ticks ('T' each) while halted; exit 0.
        bits 16
        org 0
start:  cli
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7000
        mov word [8 * 4], irq0
        mov [8 * 4 + 2], cs
        mov word [9 * 4], irq1
        mov [9 * 4 + 2], cs
        mov byte [0x700], 0
        mov byte [0x701], 0
        mov al, 0x11            ; ICW1: edge, cascade, ICW4 follows
        out 0x20, al
        mov al, 0x08            ; ICW2: IRQ 0-7 -> vectors 8-15
        out 0x21, al
        mov al, 0x04            ; ICW3: slave on IRQ 2
        out 0x21, al
        mov al, 0x01            ; ICW4: 8086 mode
        out 0x21, al
        mov al, 0xFD            ; only IRQ 1
        out 0x21, al
        mov al, 'W'
        out 0xE9, al
        sti
.key:   hlt
        cmp byte [0x700], 0
        je .key
        cli
        mov al, 0x34            ; PIT channel 0, lobyte/hibyte, mode 2
        out 0x43, al
        mov al, 1193 & 0xFF     ; 1193 ticks of 1.193 MHz = 1 ms
        out 0x40, al
        mov al, 1193 >> 8
        out 0x40, al
        mov al, 0xFC            ; IRQ 0 and 1
        out 0x21, al
        sti
.tick:  hlt
        cmp byte [0x701], 3
        jb .tick
        cli
        mov al, 0
        out 0xF4, al
.halt:  hlt
        jmp .halt

irq0:   push ax
        mov al, 'T'
        out 0xE9, al
        inc byte [0x701]
        mov al, 0x20
        out 0x20, al
        pop ax
        iret

irq1:   push ax
        mov al, 'K'
        out 0xE9, al
        mov byte [0x700], 1
        mov al, 0x20
        out 0x20, al
        pop ax
        iret

%include "reset_vector.inc"
