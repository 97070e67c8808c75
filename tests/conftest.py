"""Shared test options: long runs behind --run-slow; KVM tests fail loudly without /dev/kvm."""

import os
import subprocess
import uuid

import pytest


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run soak and benchmark-like tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="long run: pass --run-slow"))


def require_kvm() -> None:
    """Call at the start of any test that needs KVM: a missing /dev/kvm is a failure, not a skip."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.fail("/dev/kvm is missing or not accessible: this test needs KVM", pytrace=False)


# The password of the throwaway host user that host_user makes (PAM tests log on with it).
HOST_USER_PASSWORD = "Pa55-word"


@pytest.fixture
def host_user():
    """A throwaway user of this host (needs root): PAM logons and files owned by another user."""
    assert os.getuid() == 0, "this test creates a throwaway host user: run it as root"
    name = "hbx" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{HOST_USER_PASSWORD}\n", text=True, check=True)
        yield name
    finally:
        subprocess.run(["userdel", name], check=True)
