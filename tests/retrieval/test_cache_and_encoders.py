"""The query cache and the real encoders shipped in wheels."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.cache import LruCache
from retrieval.config import DenseSettings, SpladeSettings
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.splade import SpladeEncoder
from retrieval.errors import ModelLoadError, NotBuiltError


def test_lru_evicts_the_least_recently_used() -> None:
    cache: LruCache[str, int] = LruCache(2)
    calls: list[str] = []

    def compute(key: str) -> int:
        calls.append(key)
        return len(key)

    cache.get_or_compute("a", compute)
    cache.get_or_compute("bb", compute)
    cache.get_or_compute("a", compute)  # hit; "bb" is now the oldest
    cache.get_or_compute("ccc", compute)  # evicts "bb"
    cache.get_or_compute("bb", compute)
    assert calls == ["a", "bb", "ccc", "bb"]
    assert (cache.hits, cache.misses, len(cache)) == (1, 4, 2)


def test_zero_size_cache_stores_nothing() -> None:
    cache: LruCache[str, int] = LruCache(0)
    cache.get_or_compute("a", len)
    cache.get_or_compute("a", len)
    assert (cache.hits, len(cache)) == (0, 0)
    with pytest.raises(ValueError):
        LruCache(-1)


@pytest.fixture(scope="module", params=["torch", "onnx"])
def splade(request: pytest.FixtureRequest) -> SpladeEncoder:
    return SpladeEncoder(SpladeSettings(doc_max_terms=8, backend=request.param), cache_size=16).load()


def test_splade_weights_are_positive_integers_and_pruned(splade: SpladeEncoder) -> None:
    query = splade.encode_query("jeju island restaurants")
    assert query and all(isinstance(w, int) and w > 0 for w in query.values())
    assert "island" in query
    (doc,) = splade.encode_documents(
        ["Jeju island restaurants: black pork, seafood stew and tangerine cafes"]
    )
    assert 0 < len(doc) <= 8


def test_splade_query_cache_hits_on_repeats(splade: SpladeEncoder) -> None:
    splade.cache.clear()
    first = splade.encode_query("iphone 16 battery")
    again = splade.encode_query("iphone 16 battery")
    assert first == again and splade.cache.hits == 1


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_dense_vectors_are_unit_length_and_batch_matches_single(backend: str) -> None:
    enc = DenseEncoder(DenseSettings(batch_size=2, backend=backend)).load()
    texts = ["jeju island restaurants", "how to bake bread at home", "iphone 16 battery life"]
    batch = enc.encode_documents(texts)
    assert batch.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(batch[1], enc.encode_query(texts[1]), atol=1e-5)
    assert batch[0] @ enc.encode_query("food on jeju") > batch[1] @ enc.encode_query("food on jeju")


def test_unloaded_and_missing_models_fail_clearly(tmp_path) -> None:
    with pytest.raises(NotBuiltError, match="load"):
        DenseEncoder(DenseSettings()).encode_query("x")
    with pytest.raises(NotBuiltError, match="load"):
        SpladeEncoder(SpladeSettings(backend="torch")).encode_documents(["x"])
    with pytest.raises(ModelLoadError, match="not a model folder"):
        SpladeEncoder(SpladeSettings(model=str(tmp_path))).load()
    with pytest.raises(ModelLoadError, match="does not exist"):
        DenseEncoder(DenseSettings(model="./no/such/model")).load()


def test_loading_a_checkpoint_draws_no_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    import transformers

    from retrieval.encoders.loading import default_splade_path, load_pretrained

    bars = transformers.utils.logging
    bars.enable_progress_bar()
    _, model = load_pretrained(str(default_splade_path()), "AutoModelForMaskedLM", 1)
    assert model is not None
    assert "Loading weights" not in capfd.readouterr().err
    assert bars.is_progress_bar_enabled()  # the caller's setting is left as it was
