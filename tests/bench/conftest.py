from pathlib import Path

import pytest

from noisycorr.data.synthetic import write_synthetic


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A small synthetic precomp folder."""
    root = tmp_path_factory.mktemp("tiny-bench")
    write_synthetic(root, seed=3, n_train=96, n_dev=24, n_test=24, n_regions=4, feat_dim=16, n_concepts=12)
    return root
