; smc.asm -- self-modifying code stays correct while stores to RAM take the JIT's fast path.
;
; Headbox's Unicorn lets stores skip the slow path on pages without translated code and sends every
; mapping of a page back to it when the page gets code (scripts/unicorn/headbox.patch). Each case
; runs code, rewrites it, and runs it again; the new bytes must run:
;   1. the next instruction in the same block (an immediate patched just before it runs);
;   2. a function in another block of the same page, patched ROUNDS times with a new immediate;
;   3. a JIT-style buffer: code copied into a fresh buffer, run, then overwritten with other code;
;   4. with paging on: code run through virtual page A, rewritten through an alias B of the same
;      physical page (B never used for fetches), run again through A;
;   5. with paging on: data stored next to code on a code page while it keeps running.
; Everything writable is in RAM: the code under test is copied there from the ROM.

%include "common.inc"

%ifndef ROUNDS
%define ROUNDS 200
%endif

CODE_PAGE       equ 0x200000            ; cases 1, 2, 5 (copied from the templates below)
JIT_BUF         equ 0x210000            ; case 3
ALIAS_PHYS      equ 0x220000            ; case 4: the physical page ...
ALIAS_A         equ 0x400000            ; ... mapped here (executed)
ALIAS_B         equ 0x401000            ; ... and here (written)
SMC_PD          equ PAGING_BASE
SMC_PT          equ PAGING_BASE + 0x1000    ; maps 0-4 MiB one to one, except the alias pages
SMC_PT2         equ PAGING_BASE + 0x2000    ; maps 4-8 MiB: the two aliases

        START_PM32
        PRINT   "SMC start", 10
        mov     esi, page_template
        mov     edi, CODE_PAGE
        mov     ecx, page_template_end - page_template
        call    memcpy32

        ; ---- 1. the next instruction ------------------------------------------------------------
        call    CODE_PAGE + (next_insn - page_template)
        CHECK   eax, 0x42, "SMC next instruction: the patched immediate"
        PRINT   "SMC next instruction ok", 10

        ; ---- 2. another block on the same page ---------------------------------------------------
        xor     ebx, ebx
.patch: call    CODE_PAGE + (value_fn - page_template)
        CHECK   eax, ebx, "SMC same page: the function's result before the patch"
        inc     ebx
        mov     [CODE_PAGE + (value_fn - page_template) + 1], ebx     ; mov eax, imm32
        cmp     ebx, ROUNDS
        jb      .patch
        call    CODE_PAGE + (value_fn - page_template)
        CHECK   eax, ROUNDS, "SMC same page: the last patch"
        PRINT   "SMC same page ok", 10

        ; ---- 3. a JIT buffer ---------------------------------------------------------------------
        xor     ebx, ebx
.jit:   mov     byte [JIT_BUF], 0xB8                   ; mov eax, imm32
        mov     [JIT_BUF + 1], ebx
        mov     byte [JIT_BUF + 5], 0xC3               ; ret
        call    JIT_BUF
        CHECK   eax, ebx, "SMC JIT buffer: the result of the code just written"
        mov     word [JIT_BUF], 0xC340                 ; inc eax; ret
        mov     eax, ebx
        call    JIT_BUF
        lea     ecx, [ebx + 1]
        CHECK   eax, ecx, "SMC JIT buffer: the rewritten code"
        add     ebx, 7
        cmp     ebx, ROUNDS * 7
        jb      .jit
        PRINT   "SMC JIT buffer ok", 10

        ; ---- paging on ---------------------------------------------------------------------------
        mov     edi, PAGING_BASE
        mov     ecx, 0x3000
        call    memzero32
        mov     dword [SMC_PD], SMC_PT | 3
        mov     dword [SMC_PD + 4], SMC_PT2 | 3
        xor     ecx, ecx
.pt:    mov     eax, ecx
        shl     eax, 12
        or      eax, 3
        mov     [SMC_PT + ecx * 4], eax
        inc     ecx
        cmp     ecx, 1024
        jb      .pt
        mov     dword [SMC_PT2 + 0], ALIAS_PHYS | 3     ; A = 0x400000
        mov     dword [SMC_PT2 + 4], ALIAS_PHYS | 3     ; B = 0x401000
        mov     eax, SMC_PD
        mov     cr3, eax
        mov     eax, cr0
        or      eax, 0x80000000
        mov     cr0, eax
        PRINT   "SMC paging on", 10

        ; ---- 4. written through an alias ---------------------------------------------------------
        xor     ebx, ebx
.alias: mov     byte [ALIAS_B], 0xB8                   ; mov eax, imm32 (through B)
        mov     [ALIAS_B + 1], ebx
        mov     byte [ALIAS_B + 5], 0xC3
        call    ALIAS_A                                ; (through A)
        CHECK   eax, ebx, "SMC alias: code written through B, run through A"
        add     ebx, 3
        cmp     ebx, ROUNDS * 3
        jb      .alias
        PRINT   "SMC alias ok", 10

        ; ---- 5. data next to code ----------------------------------------------------------------
        xor     ebx, ebx
.data:  mov     [CODE_PAGE + (data_slot - page_template)], ebx
        call    CODE_PAGE + (read_slot - page_template)
        CHECK   eax, ebx, "SMC data on a code page: the value stored"
        inc     ebx
        cmp     ebx, ROUNDS
        jb      .data
        PRINT   "SMC data on a code page ok", 10
        PRINT   "PASS", 10
        EXIT    0

; Copied to CODE_PAGE: code that rewrites itself, a patchable function, a data slot beside code.
page_template:
next_insn:
        mov     byte [CODE_PAGE + (.imm - page_template) + 1], 0x42
.imm:   mov     eax, 0
        ret
        times 64 nop                                    ; value_fn in another block
value_fn:
        mov     eax, 0
        ret
read_slot:
        mov     eax, [CODE_PAGE + (data_slot - page_template)]
        ret
data_slot:
        dd      0
page_template_end:

        END_IMAGE
