"""Thread limits of a pipeline step (brainhead._parallel)."""

import pytest
import torch
from threadpoolctl import threadpool_info

from brainhead._parallel import limit_threads


def test_limit_threads_caps_torch_and_blas_then_restores():
    before = torch.get_num_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
        pools = threadpool_info()
        assert pools and all(pool["num_threads"] == 1 for pool in pools)
    assert torch.get_num_threads() == before


def test_limit_threads_restores_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), limit_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_limit_threads_none_changes_nothing():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with limit_threads(None):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_limit_threads_rejects_zero():
    with pytest.raises(ValueError, match="n_threads must be >= 1"), limit_threads(0):
        pass
