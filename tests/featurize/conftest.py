"""Fixtures of the featurize tests."""

import pytest
from featurize_helpers import TinyEncoder


@pytest.fixture
def tiny_encoder() -> TinyEncoder:
    return TinyEncoder()
