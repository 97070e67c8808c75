"""Fixtures shared by the integration tests."""

import pytest

from tests.support.vrdp_process import VrdpProcess


@pytest.fixture
def vrdp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # endpoint() in this process too
    started = []

    def start(**fields):
        process = VrdpProcess(tmp_path, **fields)
        started.append(process)
        return process
    yield start
    for process in started:
        process.stop()
        assert "Traceback" not in process.log_path.read_text()
