; pm_int.asm -- 32-bit protected mode: IDT gates, exceptions with error codes, ring 3 -> ring 0.
;
;  - GDT with ring-0/ring-3 code and data, a TSS (SS0:ESP0), IDT of 32-bit gates
;  - interrupt gate clears IF in the handler, trap gate keeps it; both restore it on iretd
;  - #DE (frame EIP = the div), #UD (ud2), int3 (frame EIP = after the int3)
;  - #GP with an error code: loading a selector beyond the GDT limit into DS (error = selector),
;    loading a code selector into SS (error = selector)
;  - paging on: #PF on a not-present page for a read (error 0) and a write (error 2), with CR2;
;    the handler maps the page and iretd retries the access, which then succeeds
;  - ring 3 (iretd, IOPL 0, the TSS I/O bitmap allows the debug port): `int 0x80` through a DPL-3 interrupt gate: ring-0 handler at
;    CPL 0 on the TSS stack (ESP = ESP0 - 20, SS = SS0) with the frame SS/ESP/EFLAGS/CS/EIP of
;    ring 3; iretd back to ring 3 with the handler's EAX
;  - ring 3: `int 0x41` through a DPL-0 gate: #GP with error code 0x41*8+2 (IDT bit)
;  - ring 3: write to a supervisor page: #PF error 7 (P|W|U), retried after the fix-up

%include "common.inc"
%include "faults32.inc"

v_r0_cont       equ VARS + 0x00         ; where int 0x81 continues in ring 0
v_80_count      equ VARS + 0x04
v_80_esp        equ VARS + 0x08
v_80_cs         equ VARS + 0x0C
v_80_ss         equ VARS + 0x10
v_80_eax        equ VARS + 0x14
v_80_frame      equ VARS + 0x20         ; 5 dwords
v_user_esp      equ VARS + 0x40
MAGIC           equ 0xCAFEBABE

        START_PM32
        PRINT   "PM start", 10
        SET_GATE32 0, fault32_0, INT_GATE
        SET_GATE32 3, fault32_3, INT_GATE
        SET_GATE32 6, fault32_6, INT_GATE
        SET_GATE32 13, fault32_13, INT_GATE
        SET_GATE32 14, fault32_14, INT_GATE
        SET_GATE32 0x40, fault32_64, INT_GATE
        SET_GATE32 0x41, fault32_65, TRAP_GATE
        SET_GATE32 0x80, int80_handler, INT_GATE_U
        SET_GATE32 0x81, int81_handler, INT_GATE_U
        str     ax
        movzx   eax, ax
        CHECK   eax, SEL_TSS, "PM task register"
        PRINT   "PM GDT/IDT/TSS ok", 10

        ; ---- interrupt gate vs trap gate ------------------------------------------------------
        mov     dword [f_count], 0
        sti
        int     0x40
int_gate_ret:
        pushfd
        cli
        pop     eax
        test    eax, 0x200
        jnz     .ig_ok0
        FAIL    "PM interrupt gate: IF not restored by iretd"
.ig_ok0:
        CHECK   dword [f_count], 1, "PM int 0x40: handler count"
        CHECK   dword [f_vector], 0x40, "PM int 0x40: vector"
        CHECK   dword [f_eip], int_gate_ret, "PM int 0x40: EIP in the frame"
        test    dword [f_hflags], 0x200
        jz      .ig_ok
        FAIL    "PM interrupt gate: IF still set in the handler"
.ig_ok: test    dword [f_eflags], 0x200
        jnz     .ig_ok2
        FAIL    "PM interrupt gate: IF not set in the pushed EFLAGS"
.ig_ok2:
        sti
        mov     dword [f_count], 0
        int     0x41
trap_gate_ret:
        pushfd
        cli
        pop     eax
        test    eax, 0x200
        jnz     .tg_ok0
        FAIL    "PM trap gate: IF not restored by iretd"
.tg_ok0:
        CHECK   dword [f_count], 1, "PM int 0x41: handler count"
        CHECK   dword [f_eip], trap_gate_ret, "PM int 0x41: EIP in the frame"
        test    dword [f_hflags], 0x200
        jnz     .tg_ok
        FAIL    "PM trap gate: IF cleared in the handler"
.tg_ok: PRINT   "PM interrupt gate clears IF, trap gate keeps it: ok", 10

        ; ---- #DE, #UD, int3 -------------------------------------------------------------------
        mov     eax, 1
        xor     edx, edx
        xor     ecx, ecx
        FAULT_CASE "PM #DE", 0, NOERR, 1, div ecx
        PRINT   "PM #DE ok", 10
        FAULT_CASE "PM #UD", 6, NOERR, 1, ud2
        PRINT   "PM #UD ok", 10
        mov     dword [f_count], 0
        mov     dword [f_resume], 0
        int3
int3_ret:
        CHECK   dword [f_count], 1, "PM int3: handler count"
        CHECK   dword [f_vector], 3, "PM int3: vector"
        CHECK   dword [f_eip], int3_ret, "PM int3: EIP in the frame (after the int3)"
        PRINT   "PM int3 ok", 10

        ; ---- #GP with error codes --------------------------------------------------------------
        mov     ax, 0x1230
        FAULT_CASE "PM #GP (DS beyond the GDT limit)", 13, 0x1230, 1, mov ds, ax
        mov     ax, ds
        movzx   eax, ax
        CHECK   eax, SEL_DATA, "PM #GP: DS changed by the failed load"
        mov     ax, SEL_CODE32
        FAULT_CASE "PM #GP (code selector into SS)", 13, SEL_CODE32, 1, mov ss, ax
        PRINT   "PM #GP error code ok", 10

        ; ---- paging and #PF --------------------------------------------------------------------
        mov     edi, PM_PD
        mov     ecx, 0x2000
        call    memzero32
        mov     dword [PM_PD], PM_PT | 7
        xor     ecx, ecx
.pt:    mov     eax, ecx
        shl     eax, 12
        or      eax, 7
        mov     [PM_PT + ecx * 4], eax
        inc     ecx
        cmp     ecx, 1024
        jb      .pt
        mov     dword [PM_PT + 0x300 * 4], 0x300000 | 6     ; not present
        mov     dword [PM_PT + 0x301 * 4], 0x301000 | 6     ; not present
        mov     dword [PM_PT + 0x302 * 4], 0x302000 | 3     ; supervisor only
        mov     dword [0x300010], MAGIC
        mov     dword [0x301020], 0
        mov     dword [0x302040], 0
        mov     eax, PM_PD
        mov     cr3, eax
        mov     eax, cr0
        or      eax, 0x80000000
        mov     cr0, eax
        PRINT   "PM paging on", 10
        FAULT_CASE "PM #PF read", 14, 0, 0, mov ebx, [0x300010]
        CHECK   dword [f_cr2], 0x300010, "PM #PF read: CR2"
        CHECK   ebx, MAGIC, "PM #PF read: value after the retry"
        mov     eax, 0x5A5A1234
        FAULT_CASE "PM #PF write", 14, 2, 0, mov [0x301020], eax
        CHECK   dword [f_cr2], 0x301020, "PM #PF write: CR2"
        CHECK   dword [0x301020], 0x5A5A1234, "PM #PF write: value after the retry"
        PRINT   "PM #PF ok", 10

        ; ---- ring 3 ----------------------------------------------------------------------------
        mov     dword [v_r0_cont], back_in_ring0
        ENTER_RING3_32 ring3
ring3:
        mov     ax, SEL_DATA_U | 3
        mov     ds, ax
        mov     es, ax
        mov     ax, cs
        movzx   eax, ax
        CHECK   eax, SEL_CODE32_U | 3, "PM ring 3: CS"
        PRINT   "PM ring3 ok", 10
        mov     [v_user_esp], esp
        mov     eax, 0x80
        mov     ebx, 0x11223344
        int     0x80
int80_ret:
        CHECK   eax, 0x600DF00D, "PM int 0x80: EAX returned by the handler"
        CHECK   ebx, 0x11223344, "PM int 0x80: EBX preserved"
        CHECK   esp, [v_user_esp], "PM int 0x80: ring-3 ESP after iretd"
        mov     ax, cs
        movzx   eax, ax
        CHECK   eax, SEL_CODE32_U | 3, "PM int 0x80: CS after iretd"
        mov     ax, ss
        movzx   eax, ax
        CHECK   eax, SEL_DATA_U | 3, "PM int 0x80: SS after iretd"
        CHECK   dword [v_80_count], 1, "PM int 0x80: handler count"
        CHECK   dword [v_80_eax], 0x80, "PM int 0x80: EAX in the handler"
        CHECK   dword [v_80_cs], SEL_CODE32, "PM int 0x80: CS in the handler (CPL 0)"
        CHECK   dword [v_80_ss], SEL_DATA, "PM int 0x80: SS in the handler (TSS SS0)"
        CHECK   dword [v_80_esp], ESP0_TOP - 20, "PM int 0x80: ESP in the handler (TSS ESP0 - 20)"
        CHECK   dword [v_80_frame + 0], int80_ret, "PM int 0x80: frame EIP"
        CHECK   dword [v_80_frame + 4], SEL_CODE32_U | 3, "PM int 0x80: frame CS"
        mov     eax, [v_80_frame + 8]
        and     eax, 0x3202
        CHECK   eax, USER_EFLAGS, "PM int 0x80: frame EFLAGS (IOPL 0, IF)"
        mov     eax, [v_user_esp]
        CHECK   dword [v_80_frame + 12], eax, "PM int 0x80: frame ESP"
        CHECK   dword [v_80_frame + 16], SEL_DATA_U | 3, "PM int 0x80: frame SS"
        PRINT   "PM int80 ok", 10

        ; int through a DPL-0 gate from ring 3: #GP(vector * 8 + 2)
        mov     dword [f_count], 0
        mov     dword [f_resume], gp_gate_after
gp_gate_at:
        int     0x41
gp_gate_after:
        CHECK   dword [f_count], 1, "PM ring-3 int 0x41: handler count"
        CHECK   dword [f_vector], 13, "PM ring-3 int 0x41: vector (#GP)"
        CHECK   dword [f_err], 0x41 * 8 + 2, "PM ring-3 int 0x41: #GP error code"
        CHECK   dword [f_eip], gp_gate_at, "PM ring-3 int 0x41: EIP in the frame"
        CHECK   dword [f_cs], SEL_CODE32_U | 3, "PM ring-3 int 0x41: CS in the frame"
        PRINT   "PM ring3 #GP (DPL-0 gate) ok", 10

        ; write to a supervisor page from ring 3: #PF P|W|U
        mov     dword [f_count], 0
        mov     dword [f_resume], 0
        mov     eax, 0x77665544
upf_at: mov     [0x302040], eax
        CHECK   dword [f_count], 1, "PM ring-3 #PF: handler count"
        CHECK   dword [f_vector], 14, "PM ring-3 #PF: vector"
        CHECK   dword [f_err], 7, "PM ring-3 #PF: error code"
        CHECK   dword [f_cr2], 0x302040, "PM ring-3 #PF: CR2"
        CHECK   dword [f_eip], upf_at, "PM ring-3 #PF: EIP in the frame"
        CHECK   dword [0x302040], 0x77665544, "PM ring-3 #PF: value after the retry"
        PRINT   "PM ring3 #PF ok", 10
        int     0x81                            ; back to ring 0
        FAIL    "PM int 0x81 returned to ring 3"

back_in_ring0:
        mov     ax, SEL_DATA
        mov     ds, ax
        mov     es, ax
        mov     ax, cs
        movzx   eax, ax
        CHECK   eax, SEL_CODE32, "PM back in ring 0: CS"
        PRINT   "PASS", 10
        EXIT    0

; ---- handlers ---------------------------------------------------------------------------------
        FAULT32 0, 0
        FAULT32 3, 0
        FAULT32 6, 0
        FAULT32 13, 1
        FAULT32 14, 1
        FAULT32 64, 0
        FAULT32 65, 0

int80_handler:
        mov     [v_80_esp], esp
        mov     [v_80_eax], eax
        push    ecx
        push    esi
        push    edi
        mov     cx, cs
        movzx   ecx, cx
        mov     [v_80_cs], ecx
        mov     cx, ss
        movzx   ecx, cx
        mov     [v_80_ss], ecx
        lea     esi, [esp + 12]
        mov     edi, v_80_frame
        mov     ecx, 20
        call    memcpy32
        inc     dword [v_80_count]
        pop     edi
        pop     esi
        pop     ecx
        mov     eax, 0x600DF00D
        iretd

int81_handler:                          ; never returns: continue ring-0 code on the ring-0 stack
        mov     esp, STACK0_TOP
        jmp     [v_r0_cont]

        END_IMAGE
