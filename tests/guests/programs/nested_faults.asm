; nested_faults.asm -- back-to-back and nested exceptions in long mode that must not become #DF.
;
;  1. in sequence, each handled and returned from: #DE, int 0x30, #GP(0x1230), #PF, #PF, #PF
;     (three different not-present pages, each mapped by the handler and retried), #UD;
;     the vector log must read 00 30 0D 0E 0E 0E 06
;  2. a #GP raised inside the #PF handler (bad selector into DS) and handled before the #PF
;     handler returns: log 0E 0D; the #PF's own error code and CR2 survive, the access is retried
;  3. a #PF raised inside the #PF handler (touching another not-present page): log 0E 0E; the
;     inner one maps its page, the outer one then maps its own
;  4. a #UD inside the int 0x30 handler: log 30 06
; #DF (vector 8) or any other vector goes to the "unexpected" handler: FAIL, exit code 2.

%include "common.inc"
%include "faults64.inc"

%macro CHECK_LOG 2+                     ; "name", expected vector bytes...
        jmp     %%over
%%exp:  db      %2
%%len   equ     $ - %%exp
%%over: PRINT   %1, ": "
        movzx   ecx, byte [f_nlog]
        xor     ebx, ebx
%%pr:   cmp     ebx, ecx
        jae     %%cmp
        mov     al, [f_log + rbx]
        call    hex8_64
        PRINT   " "
        inc     ebx
        jmp     %%pr
%%cmp:  PRINT   10
        CHECK   rcx, %%len, %1, ": number of exceptions"
        mov     esi, %%exp
        mov     edi, f_log
        cld
        repe cmpsb
        je      %%ok
        FAIL    %1, ": vector log"
%%ok:
        mov     byte [f_nlog], 0
%endmacro

        START_LM64
        PRINT   "LM start", 10
        SET_GATE64 0, fault64_0, INT_GATE
        SET_GATE64 6, fault64_6, INT_GATE
        SET_GATE64 13, fault64_13, INT_GATE
        SET_GATE64 14, fault64_14, INT_GATE
        SET_GATE64 0x30, fault64_48, INT_GATE
        mov     dword [0x300000], 0x30303030
        mov     dword [0x301000], 0x31313131
        mov     dword [0x302000], 0x32323232
        mov     dword [0x303000], 0x33333333
        mov     dword [0x304000], 0x34343434
        mov     dword [0x305000], 0x35353535
        mov     dword [0x306000], 0x36363636
        mov     ecx, 0x300000
.unmap: mov     rax, rcx
        or      eax, 6
        lea     rbx, [rcx - 0x200000]
        shr     rbx, 12
        mov     [LM_PT + rbx * 8], rax
        add     ecx, 0x1000
        cmp     ecx, 0x307000
        jb      .unmap
        mov     rax, cr3
        mov     cr3, rax
        mov     byte [f_nlog], 0

        ; ---- 1. a sequence of different exceptions -------------------------------------------------
        mov     eax, 1
        xor     edx, edx
        xor     ecx, ecx
        FAULT_CASE64 "NF #DE", 0, NOERR64, 1, div ecx
        mov     qword [f_count], 0
        int     0x30
        CHECK   qword [f_count], 1, "NF int 0x30: handler count"
        mov     ax, 0x1230
        FAULT_CASE64 "NF #GP", 13, 0x1230, 1, mov ds, ax
        FAULT_CASE64 "NF #PF 1", 14, 0, 0, mov eax, [0x300000]
        CHECKD  eax, 0x30303030, "NF #PF 1: value"
        FAULT_CASE64 "NF #PF 2", 14, 2, 0, mov dword [0x301000], 0x41414141
        CHECKD  dword [0x301000], 0x41414141, "NF #PF 2: value"
        FAULT_CASE64 "NF #PF 3", 14, 0, 0, mov eax, [0x302000]
        CHECKD  eax, 0x32323232, "NF #PF 3: value"
        FAULT_CASE64 "NF #UD", 6, NOERR64, 1, ud2
        CHECK_LOG "NF sequence", 0x00, 0x30, 0x0D, 0x0E, 0x0E, 0x0E, 0x06
        PRINT   "NF sequence ok", 10

        ; ---- 2. #GP inside the #PF handler ---------------------------------------------------------
        mov     qword [f_hook + 14 * 8], pf_hook_gp
        mov     eax, 0x99999999
        mov     eax, [0x303000]
        CHECKD  eax, 0x33333333, "NF #GP in #PF: value after the retry"
        CHECK   qword [v_hook_ran], 1, "NF #GP in #PF: hook ran"
        CHECK_LOG "NF #GP in #PF", 0x0E, 0x0D
        PRINT   "NF #GP inside #PF handler ok", 10

        ; ---- 3. #PF inside the #PF handler ---------------------------------------------------------
        mov     qword [v_hook_ran], 0
        mov     qword [f_hook + 14 * 8], pf_hook_pf
        mov     eax, [0x305000]
        CHECKD  eax, 0x35353535, "NF #PF in #PF: value after the retry"
        CHECK   qword [v_hook_ran], 1, "NF #PF in #PF: hook ran"
        CHECK_LOG "NF #PF in #PF", 0x0E, 0x0E
        PRINT   "NF #PF inside #PF handler ok", 10

        ; ---- 4. #UD inside a software-interrupt handler --------------------------------------------
        mov     qword [v_hook_ran], 0
        mov     qword [f_hook + 0x30 * 8], int30_hook_ud
        int     0x30
        CHECK   qword [v_hook_ran], 1, "NF #UD in int 0x30: hook ran"
        CHECK_LOG "NF #UD in int 0x30", 0x30, 0x06
        PRINT   "NF #UD inside int 0x30 handler ok", 10
        PRINT   "PASS", 10
        EXIT    0

v_hook_ran      equ VARS + 0x00

; Hooks run inside fault64_common with [rsp + 8] = CR2 at entry, [rsp + 40] = error code,
; [rsp + 48] = RIP of the outer frame (one return address above the handler's own layout).
pf_hook_gp:
        mov     qword [f_resume + 13 * 8], .after_gp
        mov     ax, 0x1230
        mov     ds, ax                          ; #GP(0x1230), resumes at .after_gp
        FAIL    "NF #GP in #PF: the bad selector load did not fault"
.after_gp:
        CHECK   qword [f_vector], 13, "NF #GP in #PF: inner vector"
        CHECK   qword [f_err], 0x1230, "NF #GP in #PF: inner error code"
        CHECK   qword [rsp + 8], 0x303000, "NF #GP in #PF: outer CR2 (saved)"
        CHECK   qword [rsp + 40], 0, "NF #GP in #PF: outer error code"
        mov     rax, cr2
        CHECK   rax, 0x303000, "NF #GP in #PF: CR2 changed by the #GP"
        inc     qword [v_hook_ran]
        ret

pf_hook_pf:
        mov     eax, [0x304000]                 ; nested #PF, mapped and retried by the inner handler
        CHECKD  eax, 0x34343434, "NF #PF in #PF: inner value"
        mov     rax, cr2
        CHECK   rax, 0x304000, "NF #PF in #PF: CR2 of the inner fault"
        CHECK   qword [rsp + 8], 0x305000, "NF #PF in #PF: outer CR2 (saved)"
        inc     qword [v_hook_ran]
        ret

int30_hook_ud:
        mov     qword [f_resume + 6 * 8], .after_ud
        ud2
        FAIL    "NF #UD in int 0x30: ud2 did not fault"
.after_ud:
        CHECK   qword [f_vector], 6, "NF #UD in int 0x30: inner vector"
        inc     qword [v_hook_ran]
        ret

        FAULT64 0, 0
        FAULT64 6, 0
        FAULT64 13, 1
        FAULT64 14, 1
        FAULT64 48, 0

        END_IMAGE
