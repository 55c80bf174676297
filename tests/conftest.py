"""Shared fixtures: where the real data lives (tests that need it skip when it is absent)."""

from __future__ import annotations

import contextlib
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


@pytest.fixture
def killed_after_epoch(monkeypatch):
    """``with killed_after_epoch(k): train(cfg)``: the run dies (KeyboardInterrupt, caught here) right
    after the checkpoint of epoch ``k`` is written, as a killed process would leave it."""
    from noisycorr.engine import trainer as trainer_mod

    real_save = trainer_mod.atomic_torch_save

    @contextlib.contextmanager
    def killed(epoch: int):
        def save_then_die(obj, path):
            real_save(obj, path)
            if obj["epoch"] == epoch:
                raise KeyboardInterrupt

        monkeypatch.setattr(trainer_mod, "atomic_torch_save", save_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(trainer_mod, "atomic_torch_save", real_save)

    return killed
