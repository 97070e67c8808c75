"""VRDE authentication: null/guest/external types, VBoxAuthSimple hashes, the host's PAM with a real
throwaway user, user-supplied libraries, VirtualBox's log lines, and the failure throttle."""

import os
import subprocess
import uuid

import pytest

from services.ipc.vrde import VrdeConfig
from services.vrdp.auth import (
    ACCEPT,
    REFUSE,
    REPLACE,
    AuthRequest,
    FailureThrottle,
    check_logon,
    multicon_decision,
)
from services.vrdp.auth.simple import password_hash

SECRET_HASH = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"


def request(config, user="john", password="secret", domain=""):
    return AuthRequest(config.vm_uuid, user, password, domain, 1, config, "127.0.0.1")


def test_password_hash_is_virtualbox_example():
    assert password_hash("secret") == SECRET_HASH


def test_null_grants_and_logs(caplog):
    with caplog.at_level("INFO", logger="headbox.vrdp.auth"):
        assert check_logon(request(VrdeConfig(auth_type="null"), domain="HOME"))
    assert "AUTH: User: [john]. Domain: [HOME]. Authentication type: [Null]" in caplog.text
    assert "AUTH: Access granted." in caplog.text


def test_guest_is_refused_with_a_reason(caplog):
    with caplog.at_level("INFO", logger="headbox.vrdp.auth"):
        assert not check_logon(request(VrdeConfig(auth_type="guest")))
    assert "guest authentication is not supported: no Guest Additions" in caplog.text
    assert "AUTH: Access denied." in caplog.text


def test_vboxauthsimple(caplog):
    config = VrdeConfig(auth_type="external", auth_library="VBoxAuthSimple", users={"john": SECRET_HASH})
    with caplog.at_level("INFO", logger="headbox.vrdp.auth"):
        assert check_logon(request(config))
        assert check_logon(request(config, user="OFFICE\\john"))  # the part after the first backslash
        assert not check_logon(request(config, password="Secret"))
        assert not check_logon(request(config, user="mary"))
        assert not check_logon(request(config, user="a\\b\\john"))
    assert "Authentication type: [External]" in caplog.text
    assert "AUTH: external authentication module returned 'access denied'" in caplog.text
    assert "AUTH: external authentication module returned 'access granted'" in caplog.text


def test_user_library_from_file_and_module(tmp_path, caplog):
    library = tmp_path / "mine.py"
    library.write_text("from services.vrdp.auth import AuthResult\n"
                       "def authenticate(request):\n"
                       "    return AuthResult.GRANTED if request.domain == 'ok' else AuthResult.DENIED\n")
    config = VrdeConfig(auth_type="external", auth_library=str(library))
    assert check_logon(request(config, domain="ok"))
    assert not check_logon(request(config, domain="no"))
    config = VrdeConfig(auth_type="external", auth_library="services.vrdp.auth.simple",
                        users={"john": SECRET_HASH})
    assert check_logon(request(config))


def test_broken_libraries_deny(tmp_path, caplog):
    (tmp_path / "noexport.py").write_text("x = 1\n")
    (tmp_path / "raises.py").write_text("def authenticate(request):\n    raise RuntimeError('boom')\n")
    (tmp_path / "wrong.py").write_text("def authenticate(request):\n    return True\n")
    with caplog.at_level("INFO", logger="headbox.vrdp.auth"):
        for name in ("noexport.py", "raises.py", "wrong.py", "missing.py"):
            config = VrdeConfig(auth_type="external", auth_library=str(tmp_path / name))
            assert not check_logon(request(config))
        assert not check_logon(request(VrdeConfig(auth_type="external", auth_library="no_such.module")))
    assert "Could not load the external authentication library" in caplog.text
    assert "failed: RuntimeError: boom" in caplog.text
    assert "Traceback" not in caplog.text


@pytest.fixture
def host_user():
    assert os.getuid() == 0, "the PAM test creates a throwaway host user: run it as root"
    name = "hbx" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:Pa55-word\n", text=True, check=True)
        yield name
    finally:
        subprocess.run(["userdel", name], check=True)


def test_pam_checks_a_real_host_user(host_user, caplog):
    config = VrdeConfig(auth_type="external")  # auth_library defaults to VBoxAuth
    with caplog.at_level("INFO", logger="headbox.vrdp.auth"):
        assert check_logon(request(config, user=host_user, password="Pa55-word"))
        assert not check_logon(request(config, user=host_user, password="wrong"))
        assert not check_logon(request(config, user="nosuchuser" + uuid.uuid4().hex[:6], password="x"))
        assert not check_logon(request(config, user=host_user, password=""))
    assert "returned 'access granted'" in caplog.text and "returned 'access denied'" in caplog.text


def test_throttle_grows_per_address_and_forgets():
    throttle = FailureThrottle(first=1, maximum=4, forget_after=100)
    assert throttle.delay("a", 0) == 0
    for expected in (1, 2, 4, 4):
        throttle.record("a", False, 0)
        assert throttle.delay("a", 1) == expected
    assert throttle.delay("b", 1) == 0  # other addresses are not slowed
    assert throttle.delay("a", 200) == 0  # ten quiet minutes (here 100 s) forget
    throttle.record("a", False, 300)
    throttle.record("a", True, 301)
    assert throttle.delay("a", 302) == 0


def test_auth_request_hides_the_password():
    assert "secret" not in repr(request(VrdeConfig()))


def test_multicon_decision_table(caplog):
    with caplog.at_level("INFO", logger="headbox.vrdp.auth"):
        assert multicon_decision(False, False, 0) == ACCEPT
        assert multicon_decision(True, False, 3) == ACCEPT
        assert multicon_decision(True, True, 1) == ACCEPT
        assert multicon_decision(False, False, 1) == REFUSE
        assert "AUTH: Multiple connections are not enabled. Access denied." in caplog.text
        assert multicon_decision(False, True, 1) == REPLACE
        assert "AUTH: Multiple connections are not enabled. Disconnecting existing client." in caplog.text
