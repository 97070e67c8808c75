"""Fixtures shared by the acceptance tests."""

from __future__ import annotations

import pytest

from tests.support.vboxmanage import Cli


@pytest.fixture
def cli():
    home = Cli()
    try:
        yield home
    finally:
        home.close()
