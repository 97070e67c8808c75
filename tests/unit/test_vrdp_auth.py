"""VRDE authentication: null/guest/external types, VBoxAuthSimple hashes, the host's PAM with a real
throwaway user, user-supplied libraries, VirtualBox's log lines, and the failure throttle."""

import os
import shutil
import uuid

from services.ipc.vrde import VrdeConfig
from services.vrdp.auth import (
    ACCEPT,
    REFUSE,
    REPLACE,
    AuthRequest,
    FailureThrottle,
    Verdict,
    check_logon,
    multicon_decision,
)
from services.vrdp.auth.simple import password_hash
from tests.conftest import HOST_USER_PASSWORD

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




def test_pam_checks_a_real_host_user(host_user, caplog):
    config = VrdeConfig(auth_type="external")  # auth_library defaults to VBoxAuth
    with caplog.at_level("INFO", logger="headbox.vrdp.auth"):
        assert check_logon(request(config, user=host_user, password=HOST_USER_PASSWORD))
        assert not check_logon(request(config, user=host_user, password="wrong"))
        assert not check_logon(request(config, user="nosuchuser" + uuid.uuid4().hex[:6], password="x"))
        assert not check_logon(request(config, user=host_user, password=""))
    assert "returned 'access granted'" in caplog.text and "returned 'access denied'" in caplog.text


def test_throttle_delays_then_locks_out_and_forgets():
    throttle = FailureThrottle(first=1, maximum=4, lockout_after=5, lockout=60, forget_after=100)
    assert throttle.verdict("a", 0) == Verdict()
    for expected in (1, 2, 4, 4):
        throttle.record("a", False, 0)
        assert throttle.verdict("a", 1) == Verdict(delay=expected)
    throttle.record("a", False, 10)                 # the fifth: locked out, answers at once
    assert throttle.verdict("a", 11) == Verdict(locked_for=59)
    assert throttle.verdict("b", 11) == Verdict()   # other addresses are not slowed
    assert throttle.verdict("a", 71) == Verdict(delay=4)
    throttle.record("a", False, 71)                 # the sixth doubles the lockout
    assert throttle.verdict("a", 72) == Verdict(locked_for=119)
    assert throttle.verdict("a", 71 + 120 + 101) == Verdict()  # quiet after the lockout: forgotten
    throttle.record("a", False, 300)
    throttle.record("a", True, 301)
    assert throttle.verdict("a", 302) == Verdict()


def test_throttle_survives_a_restart(tmp_path):
    path = str(tmp_path / "failures.json")
    first = FailureThrottle(path, lockout_after=2, lockout=60)
    first.record("10.0.0.9", False, 1000.0)
    first.record("10.0.0.9", False, 1001.0)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert FailureThrottle(path, lockout_after=2, lockout=60).verdict("10.0.0.9", 1002.0).locked_for == 59
    (tmp_path / "failures.json").write_text("{not json")
    assert FailureThrottle(path).verdict("10.0.0.9", 1002.0) == Verdict()   # unreadable: afresh


def test_throttle_turns_serialize_an_address_and_a_user():
    throttle = FailureThrottle(queue_wait=0.2)
    with throttle.turn("a", "john") as first:
        assert first
        with throttle.turn("a", "eve") as same_address, throttle.turn("b", "JOHN") as same_user:
            assert not same_address and not same_user
        with throttle.turn("b", "eve") as other:
            assert other
    with throttle.turn("a", "john") as again:
        assert again
    assert throttle._turns == {}
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


def test_a_library_another_user_can_change_is_never_run(tmp_path, host_user, caplog):
    """The RDP server may run as root: a library file another user owns, or one in a folder they
    can write to, would run their code. It is refused and the logon denied."""
    marker = tmp_path / "ran"
    code = (f"open({str(marker)!r}, 'w').close()\n"
            "from services.vrdp.auth import AuthResult\n"
            "def authenticate(request):\n    return AuthResult.GRANTED\n")
    theirs = tmp_path / "theirs.py"
    theirs.write_text(code)
    shutil.chown(theirs, user=host_user)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "mine.py").write_text(code)
    with caplog.at_level("INFO", logger="headbox.vrdp.auth"):
        for path in (theirs, shared / "mine.py"):
            assert not check_logon(request(VrdeConfig(auth_type="external", auth_library=str(path))))
    assert not marker.exists()
    assert "theirs.py belongs to uid" in caplog.text
    assert "shared is writable by other users (mode 777)" in caplog.text
