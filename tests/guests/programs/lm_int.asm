; lm_int.asm -- long mode (PAE paging, EFER.LME, 64-bit code): 64-bit IDT, IST, #PF, #GP, ring 3.
;
;  - EFER.LMA set, CS = 64-bit code selector
;  - `int 0x50` through a gate with IST=1: the handler runs on the IST1 stack (RSP = IST1 - 40),
;    frame SS:RSP:RFLAGS:CS:RIP (RSP = the caller's, SS = the caller's)
;  - `int 0x51` (no IST) from a misaligned RSP (8 mod 16): the frame is 16-byte aligned
;    (handler RSP = (old RSP & ~15) - 40) and holds the misaligned old RSP
;  - #PF read (error 0) and write (error 2) on not-present 4 KiB pages with CR2; handler maps
;    the page, iretq retries
;  - #GP(selector) loading a selector beyond the GDT limit into DS; #GP(0) for a non-canonical
;    address
;  - ring 3 (iretq): `int 0x80` through a DPL-3 gate to ring 0 on the 64-bit TSS's RSP0
;    (handler RSP = RSP0 - 40, SS = NULL, CPL 0), frame of ring 3; iretq back to ring 3;
;    a ring-3 write to a supervisor page: #PF error 7

%include "common.inc"
%include "faults64.inc"

v_r0_cont       equ VARS + 0x00
v_80_count      equ VARS + 0x08
v_80_rsp        equ VARS + 0x10
v_80_cs         equ VARS + 0x18
v_80_ss         equ VARS + 0x20
v_80_rax        equ VARS + 0x28
v_80_frame      equ VARS + 0x40         ; 5 qwords
v_user_rsp      equ VARS + 0x80
v_rsp_before    equ VARS + 0x88
MAGIC           equ 0x1122334455667788

        START_LM64
        PRINT   "LM start", 10
        mov     ecx, 0xC0000080
        rdmsr
        test    eax, 1 << 10
        jnz     .lma_ok
        FAIL    "LM EFER.LMA not set"
.lma_ok:
        mov     ax, cs
        movzx   eax, ax
        CHECK   rax, SEL_CODE64, "LM CS"
        PRINT   "LM64 mode ok", 10

        SET_GATE64 3, fault64_3, INT_GATE
        SET_GATE64 13, fault64_13, INT_GATE
        SET_GATE64 14, fault64_14, INT_GATE
        SET_GATE64 0x50, fault64_80, INT_GATE, 1
        SET_GATE64 0x51, fault64_81, INT_GATE
        SET_GATE64 0x80, int80_handler, INT_GATE_U
        SET_GATE64 0x81, int81_handler, INT_GATE_U

        ; ---- IST ---------------------------------------------------------------------------------
        mov     qword [f_count], 0
        mov     [v_rsp_before], rsp
        int     0x50
ist_ret:
        CHECK   qword [f_count], 1, "LM IST: handler count"
        CHECK   qword [f_hrsp], IST1_TOP - 40, "LM IST: handler RSP (IST1 - 40)"
        CHECK   qword [f_rip], ist_ret, "LM IST: frame RIP"
        CHECK   qword [f_cs], SEL_CODE64, "LM IST: frame CS"
        mov     rax, [v_rsp_before]
        CHECK   qword [f_rsp], rax, "LM IST: frame RSP"
        CHECK   qword [f_ss], SEL_DATA, "LM IST: frame SS"
        mov     rax, [f_rflags]
        and     eax, 0x202
        CHECK   rax, 2, "LM IST: frame RFLAGS"
        PRINT   "LM IST frame ok", 10

        ; ---- 16-byte alignment of the frame --------------------------------------------------------
        mov     rbx, rsp
        and     rsp, -16
        sub     rsp, 8
        mov     [v_rsp_before], rsp
        mov     qword [f_count], 0
        int     0x51
align_ret:
        mov     rsp, rbx
        CHECK   qword [f_count], 1, "LM align: handler count"
        mov     rax, [v_rsp_before]
        CHECK   qword [f_rsp], rax, "LM align: frame RSP"
        and     rax, -16
        sub     rax, 40
        CHECK   qword [f_hrsp], rax, "LM align: handler RSP (frame not 16-byte aligned)"
        CHECK   qword [f_rip], align_ret, "LM align: frame RIP"
        PRINT   "LM frame alignment ok", 10

        ; ---- #PF -----------------------------------------------------------------------------------
        mov     rax, MAGIC
        mov     [0x300010], rax
        mov     qword [LM_PTE(0x300000)], 0x300000 | 6      ; not present
        mov     qword [LM_PTE(0x301000)], 0x301000 | 6      ; not present
        mov     qword [LM_PTE(0x302000)], 0x302000 | 3      ; supervisor only
        mov     rax, cr3
        mov     cr3, rax
        FAULT_CASE64 "LM #PF read", 14, 0, 0, mov rbx, [0x300010]
        CHECK   qword [f_cr2], 0x300010, "LM #PF read: CR2"
        mov     rax, MAGIC
        CHECK   rbx, rax, "LM #PF read: value after the retry"
        mov     rax, 0x0123456789ABCDEF
        FAULT_CASE64 "LM #PF write", 14, 2, 0, mov [0x301020], rax
        CHECK   qword [f_cr2], 0x301020, "LM #PF write: CR2"
        CHECK   qword [0x301020], rax, "LM #PF write: value after the retry"
        PRINT   "LM #PF ok", 10

        ; ---- #GP -----------------------------------------------------------------------------------
        mov     ax, 0x1230
        FAULT_CASE64 "LM #GP (DS beyond the GDT limit)", 13, 0x1230, 1, mov ds, ax
        mov     rax, 0x0000800000000000
        FAULT_CASE64 "LM #GP (non-canonical address)", 13, 0, 1, mov rbx, [rax]
        PRINT   "LM #GP error code ok", 10

        ; ---- int3 ----------------------------------------------------------------------------------
        mov     qword [f_count], 0
        int3
int3_ret:
        CHECK   qword [f_count], 1, "LM int3: handler count"
        CHECK   qword [f_vector], 3, "LM int3: vector"
        CHECK   qword [f_rip], int3_ret, "LM int3: frame RIP"
        PRINT   "LM int3 ok", 10

        ; ---- ring 3 --------------------------------------------------------------------------------
        mov     qword [v_r0_cont], back_in_ring0
        ENTER_RING3_64 ring3
ring3:
        mov     ax, cs
        movzx   eax, ax
        CHECK   rax, SEL_CODE64_U | 3, "LM ring 3: CS"
        PRINT   "LM ring3 ok", 10
        mov     [v_user_rsp], rsp
        mov     eax, 0x80
        mov     rbx, 0x1234567812345678
        int     0x80
int80_ret:
        CHECK   rax, 0x600DF00D, "LM int 0x80: RAX returned by the handler"
        mov     rcx, 0x1234567812345678
        CHECK   rbx, rcx, "LM int 0x80: RBX preserved"
        CHECK   rsp, [v_user_rsp], "LM int 0x80: RSP after iretq"
        mov     ax, cs
        movzx   eax, ax
        CHECK   rax, SEL_CODE64_U | 3, "LM int 0x80: CS after iretq"
        mov     ax, ss
        movzx   eax, ax
        CHECK   rax, SEL_DATA_U2 | 3, "LM int 0x80: SS after iretq"
        CHECK   qword [v_80_count], 1, "LM int 0x80: handler count"
        CHECK   qword [v_80_rax], 0x80, "LM int 0x80: RAX in the handler"
        CHECK   qword [v_80_cs], SEL_CODE64, "LM int 0x80: CS in the handler (CPL 0)"
        CHECK   qword [v_80_ss], 0, "LM int 0x80: SS in the handler (NULL)"
        CHECK   qword [v_80_rsp], ESP0_TOP - 40, "LM int 0x80: RSP in the handler (RSP0 - 40)"
        CHECK   qword [v_80_frame + 0], int80_ret, "LM int 0x80: frame RIP"
        CHECK   qword [v_80_frame + 8], SEL_CODE64_U | 3, "LM int 0x80: frame CS"
        mov     rax, [v_80_frame + 16]
        and     eax, 0x3202
        CHECK   rax, USER_EFLAGS, "LM int 0x80: frame RFLAGS (IOPL 0, IF)"
        mov     rax, [v_user_rsp]
        CHECK   qword [v_80_frame + 24], rax, "LM int 0x80: frame RSP"
        CHECK   qword [v_80_frame + 32], SEL_DATA_U2 | 3, "LM int 0x80: frame SS"
        PRINT   "LM int80 ok", 10

        mov     qword [f_count], 0
        mov     eax, 0x77665544
upf_at: mov     [0x302040], eax
        CHECK   qword [f_count], 1, "LM ring-3 #PF: handler count"
        CHECK   qword [f_vector], 14, "LM ring-3 #PF: vector"
        CHECK   qword [f_err], 7, "LM ring-3 #PF: error code"
        CHECK   qword [f_cr2], 0x302040, "LM ring-3 #PF: CR2"
        CHECK   qword [f_rip], upf_at, "LM ring-3 #PF: frame RIP"
        CHECK   qword [f_cs], SEL_CODE64_U | 3, "LM ring-3 #PF: frame CS"
        CHECK   qword [f_hrsp], ESP0_TOP - 40, "LM ring-3 #PF: frame RIP slot at RSP0 - 40"
        CHECKD  dword [0x302040], 0x77665544, "LM ring-3 #PF: value after the retry"
        PRINT   "LM ring3 #PF ok", 10
        int     0x81
        FAIL    "LM int 0x81 returned to ring 3"

back_in_ring0:
        mov     ax, cs
        movzx   eax, ax
        CHECK   rax, SEL_CODE64, "LM back in ring 0: CS"
        PRINT   "PASS", 10
        EXIT    0

; ---- handlers ---------------------------------------------------------------------------------
        FAULT64 3, 0
        FAULT64 13, 1
        FAULT64 14, 1
        FAULT64 80, 0
        FAULT64 81, 0

int80_handler:
        mov     [v_80_rsp], rsp
        mov     [v_80_rax], rax
        push    rcx
        push    rsi
        push    rdi
        mov     cx, cs
        movzx   ecx, cx
        mov     [v_80_cs], rcx
        mov     cx, ss
        movzx   ecx, cx
        mov     [v_80_ss], rcx
        lea     rsi, [rsp + 24]
        mov     edi, v_80_frame
        mov     ecx, 5
        cld
        rep movsq
        inc     qword [v_80_count]
        pop     rdi
        pop     rsi
        pop     rcx
        mov     eax, 0x600DF00D
        iretq

int81_handler:
        mov     rsp, STACK0_TOP
        mov     ax, SEL_DATA
        mov     ss, ax
        jmp     [v_r0_cont]

        END_IMAGE
