"""Index encoding runs on ``index_threads`` threads (torch or ONNX Runtime), as one thread would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.threads import torch_threads
from retrieval.config import DenseSettings, SpladeSettings
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.splade import SpladeEncoder

TEXTS = [
    "Jeju island restaurants: local favorites, black pork and seafood by the harbour",
    "Seoul indoor attractions for families on a rainy day",
    "videos of hiking Hallasan in winter",
    "galbi jjim",
] * 5


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_two_index_threads_encode_like_one(backend: str) -> None:
    dense = {
        n: DenseEncoder(DenseSettings(batch_size=4, backend=backend), index_threads=n).load() for n in (1, 2)
    }
    sparse = {n: SpladeEncoder(SpladeSettings(backend=backend), index_threads=n).load() for n in (1, 2)}
    before = torch.get_num_threads()  # as loading left it (the query threads)
    np.testing.assert_allclose(dense[1].encode_documents(TEXTS), dense[2].encode_documents(TEXTS), atol=1e-5)
    one, two = (sparse[n].encode_documents(TEXTS) for n in (1, 2))
    assert [set(v) for v in one] == [set(v) for v in two]
    assert torch.get_num_threads() == before  # the batch job leaves the process setting as it was
