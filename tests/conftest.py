"""Shared fixtures: where the real data lives (tests that need it skip when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from noisycorr.data.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder ($NOISYCORR_SHARED_DATA or <repo>/../shared/data), else skip."""
    root = shared_data_dir()
    if root is None:
        pytest.skip(
            "shared data folder not found: set NOISYCORR_SHARED_DATA or place it at <repo>/../shared/data"
        )
    return root
