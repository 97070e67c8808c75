; pm_sysenter.asm -- sysenter/sysexit round trips in 32-bit protected mode.
;
; IA32_SYSENTER_CS = 0x08, _ESP = SYS_STACK_TOP, _EIP = the handler. From ring 3 (ECX = ring-3 ESP,
; EDX = return EIP), `sysenter` must arrive at CPL 0 with CS = 0x08, SS = 0x10, ESP = SYSENTER_ESP,
; IF cleared and the general registers intact; `sysexit` must return to EIP = EDX, ESP = ECX with
; CS = SYSENTER_CS + 16 | 3 = 0x1B and SS = SYSENTER_CS + 24 | 3 = 0x23. ITER round trips.

%include "common.inc"

%ifndef ITER
%define ITER 3
%endif

v_r0_cont       equ VARS + 0x00
v_count         equ VARS + 0x04
v_user_esp      equ VARS + 0x08

        START_PM32
        PRINT   "PM start", 10
        SET_GATE32 0x81, int81_handler, INT_GATE_U
        mov     ecx, 0x174                      ; IA32_SYSENTER_CS
        xor     edx, edx
        mov     eax, SEL_CODE32
        wrmsr
        mov     ecx, 0x175                      ; IA32_SYSENTER_ESP
        mov     eax, SYS_STACK_TOP
        wrmsr
        mov     ecx, 0x176                      ; IA32_SYSENTER_EIP
        mov     eax, sysenter_handler
        wrmsr
        mov     ecx, 0x174
        rdmsr
        CHECK   eax, SEL_CODE32, "PM rdmsr IA32_SYSENTER_CS"
        PRINT   "PM sysenter MSRs ok", 10

        mov     dword [v_r0_cont], back_in_ring0
        ENTER_RING3_32 ring3
ring3:
        mov     ax, SEL_DATA_U | 3
        mov     ds, ax
        mov     es, ax
        PRINT   "PM ring3 ok", 10
        mov     esi, 0                          ; iteration
user_loop:
        mov     [v_user_esp], esp
        mov     ecx, esp
        mov     edx, sysexit_target
        mov     eax, esi
        mov     ebx, 0x13579BDF
        mov     edi, 0x2468ACE0
        mov     ebp, 0xDEADBEEF
        sysenter
        FAIL    "PM sysenter fell through"
sysexit_target:
        mov     cx, cs
        movzx   ecx, cx
        CHECK   ecx, SEL_CODE32_U | 3, "PM sysexit: CS"
        mov     cx, ss
        movzx   ecx, cx
        CHECK   ecx, SEL_DATA_U | 3, "PM sysexit: SS"
        CHECK   esp, [v_user_esp], "PM sysexit: ESP = ECX"
        lea     ecx, [esi + 0x1000]
        CHECK   eax, ecx, "PM sysexit: EAX from the handler"
        CHECK   ebx, 0x13579BDF, "PM sysexit: EBX preserved"
        CHECK   edi, 0x2468ACE0, "PM sysexit: EDI preserved"
        CHECK   ebp, 0xDEADBEEF, "PM sysexit: EBP preserved"
        inc     esi
        cmp     esi, ITER
        jb      user_loop
        CHECK   dword [v_count], ITER, "PM sysenter: handler count"
        PRINT   "PM sysenter/sysexit x"
        mov     eax, ITER
        call    dec32
        PRINT   " ok", 10
        int     0x81
        FAIL    "PM int 0x81 returned to ring 3"

back_in_ring0:
        mov     ax, SEL_DATA
        mov     ds, ax
        mov     es, ax
        PRINT   "PASS", 10
        EXIT    0

sysenter_handler:
        ; no stack use before the checks: ESP must be exactly IA32_SYSENTER_ESP
        cmp     esp, SYS_STACK_TOP
        je      .esp_ok
        FAIL    "PM sysenter: ESP is not IA32_SYSENTER_ESP"
.esp_ok:
        push    eax
        pushfd
        pop     eax
        test    eax, 0x200
        jz      .if_ok
        FAIL    "PM sysenter: IF not cleared"
.if_ok: mov     ax, cs
        movzx   eax, ax
        CHECK   eax, SEL_CODE32, "PM sysenter: CS"
        mov     ax, ss
        movzx   eax, ax
        CHECK   eax, SEL_DATA, "PM sysenter: SS"
        pop     eax
        CHECK   eax, esi, "PM sysenter: EAX in the handler"
        CHECK   ebx, 0x13579BDF, "PM sysenter: EBX in the handler"
        CHECK   ecx, [v_user_esp], "PM sysenter: ECX in the handler"
        CHECK   edx, sysexit_target, "PM sysenter: EDX in the handler"
        inc     dword [v_count]
        add     eax, 0x1000
        sti
        sysexit

int81_handler:
        mov     esp, STACK0_TOP
        jmp     [v_r0_cont]

        END_IMAGE
