; Real mode: 64 letters computed from general registers, the stack and a RAM counter, so a snapshot
; that loses any of them changes what follows; then exit code 0x2A. DELAY spaces the letters.
; (No SSE: the nested kvm_pvm on the build machine emulates non-paged code and has no SSE there.)
%ifndef DELAY
%define DELAY 300
%endif
        bits 16
        org 0
start:  cli
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7000
        mov dword [0x600], 0    ; iteration counter in RAM
        mov ebx, 7
        mov esi, 3
        mov edi, 5
.loop:  add esi, edi
        rol edi, 1
        or edi, esi
        mov eax, esi
        imul ebx, ebx, 31
        add ebx, eax
        add ebx, [0x600]
        mov eax, ebx
        shr eax, 3
        xor edx, edx
        mov ecx, 26
        div ecx
        mov al, dl
        add al, 'a'
        push eax
        call putc
        pop eax
        mov cx, DELAY
.delay: loop .delay
        inc dword [0x600]
        cmp dword [0x600], 64
        jb .loop
        mov al, 0x2A
        out 0xF4, al
.halt:  hlt
        jmp .halt

putc:   out 0xE9, al
        ret

%include "reset_vector.inc"
