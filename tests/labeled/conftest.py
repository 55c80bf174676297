"""Fixtures of the noisy-label tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from labeled_helpers import write_tiny_npz


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A 4-class npz with 160 train and 60 test pairs."""
    return write_tiny_npz(tmp_path / "tiny.npz")


@pytest.fixture(scope="session")
def wiki_mat(shared_data: Path) -> Path:
    path = shared_data / "wikipedia" / "wikiData_with_labels.mat"
    if not path.is_file():
        pytest.skip("the Wikipedia benchmark is not in the shared data folder")
    return path
