"""Fixtures of the FID/KID tests (evaluation, gan-eval, the training hook)."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="module")
def one_thread():
    """Small matrices and networks: on a shared 2-core machine spinning BLAS/OpenMP threads made KID's
    kernel products up to ~80x slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One shapes-classifier cache for the whole session, so an extractor that is not shipped is trained once."""
    path = tmp_path_factory.getbasetemp() / "gan-forge-cache"
    path.mkdir(exist_ok=True)
    return path
