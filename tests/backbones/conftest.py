"""Fixtures for the backbone tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from bb_helpers import require_shared_data


@pytest.fixture
def shared_data() -> Path:
    return require_shared_data()
