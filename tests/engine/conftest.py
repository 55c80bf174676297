from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from noisycorr.data.synthetic import write_synthetic


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A small synthetic precomp folder (regions and pooled features)."""
    root = tmp_path_factory.mktemp("tiny")
    write_synthetic(root, seed=3, n_train=96, n_dev=24, n_test=24, n_regions=4, feat_dim=16, n_concepts=12)
    return root


@pytest.fixture
def one_thread():
    """No thread pool of the parent may be busy across a fork (it would deadlock the child): the tests
    that fork a training child use it (``pytestmark``)."""
    threads = torch.get_num_threads()
    with threadpool_limits(1):
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(threads)
