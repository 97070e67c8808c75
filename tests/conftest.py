"""Shared test options: long runs behind --run-slow; KVM tests fail loudly without /dev/kvm."""

import os

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
