"""VBoxAuth: the host's users through PAM (libpam via ctypes): pam_authenticate, then pam_acct_mgmt.

Service "headbox" when /etc/pam.d/headbox exists, else "login". pam_unix checks other users' passwords
only when it can read /etc/shadow (the process runs as root); otherwise unix_chkpwd admits the caller only."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

from services.vrdp.auth.base import AuthRequest, AuthResult

PAM_SUCCESS = 0
PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_ERROR_MSG, PAM_TEXT_INFO = 1, 2, 3, 4
PAM_CONV_ERR = 19
PAM_BUF_ERR = 5
PAM_RHOST = 4
PAM_DISALLOW_NULL_AUTHTOK = 0x0001
SERVICE_FILE = "/etc/pam.d/headbox"


class PamMessage(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class PamResponse(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


CONV_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(PamMessage)),
                             ctypes.POINTER(ctypes.POINTER(PamResponse)), ctypes.c_void_p)


class PamConv(ctypes.Structure):
    _fields_ = [("conv", CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


_lock = threading.Lock()
_libs = None


def _libraries():
    global _libs
    with _lock:
        if _libs is None:
            pam_name = ctypes.util.find_library("pam") or "libpam.so.0"
            pam = ctypes.CDLL(pam_name)
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            pam.pam_start.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(PamConv),
                                      ctypes.POINTER(ctypes.c_void_p)]
            pam.pam_start.restype = ctypes.c_int
            for name in ("pam_authenticate", "pam_acct_mgmt", "pam_end"):
                getattr(pam, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
                getattr(pam, name).restype = ctypes.c_int
            pam.pam_set_item.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
            pam.pam_set_item.restype = ctypes.c_int
            libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
            libc.calloc.restype = ctypes.c_void_p
            libc.strdup.argtypes = [ctypes.c_char_p]
            libc.strdup.restype = ctypes.c_void_p
            _libs = (pam, libc)
    return _libs


def service_name() -> str:
    return "headbox" if os.path.exists(SERVICE_FILE) else "login"


def _conversation(libc, user: bytes, password: bytes):
    def converse(count, messages, responses, _appdata):
        # PAM frees the answers with free(): they must come from the C heap.
        answers = libc.calloc(count, ctypes.sizeof(PamResponse))
        if not answers:
            return PAM_BUF_ERR
        array = ctypes.cast(answers, ctypes.POINTER(PamResponse))
        for index in range(count):
            style = messages[index].contents.msg_style
            if style == PAM_PROMPT_ECHO_OFF:
                array[index].resp = libc.strdup(password)
            elif style == PAM_PROMPT_ECHO_ON:
                array[index].resp = libc.strdup(user)
        responses[0] = array
        return PAM_SUCCESS
    return CONV_FUNC(converse)


def authenticate(request: AuthRequest) -> AuthResult:
    if not request.user or "\0" in request.user or "\0" in request.password:
        return AuthResult.DENIED
    pam, libc = _libraries()
    user, password = request.user.encode(), request.password.encode()
    callback = _conversation(libc, user, password)  # kept alive until pam_end
    conv = PamConv(callback, None)
    handle = ctypes.c_void_p()
    status = pam.pam_start(service_name().encode(), user, ctypes.byref(conv), ctypes.byref(handle))
    if status != PAM_SUCCESS:
        return AuthResult.DENIED
    try:
        if request.address:
            rhost = ctypes.create_string_buffer(request.address.encode())
            pam.pam_set_item(handle, PAM_RHOST, ctypes.cast(rhost, ctypes.c_void_p))
        status = pam.pam_authenticate(handle, PAM_DISALLOW_NULL_AUTHTOK)
        if status == PAM_SUCCESS:
            status = pam.pam_acct_mgmt(handle, PAM_DISALLOW_NULL_AUTHTOK)
    finally:
        pam.pam_end(handle, status)
    return AuthResult.GRANTED if status == PAM_SUCCESS else AuthResult.DENIED
