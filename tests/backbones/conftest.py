"""Fixtures for the backbone tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bb_helpers import require_shared_data


@pytest.fixture
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture(autouse=True)
def _one_thread():
    # The tensors here are tiny: extra intra-op threads only add spin-waiting on a loaded machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
