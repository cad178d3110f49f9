"""The ONNX Runtime encoder backend against the torch reference: same outputs, the same rankings in miniature,
a cache that survives damage, bounded threads, and length batching that keeps the passages' order. Real models
from the installed wheels, on tiny-world blocks and logged queries.

Retrieval quality per backend over whole indexes (tiny-world recall@100, CISI nDCG@10) is in
test_encoder_quality.py (slow, gated: it builds torch reference indexes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from data.layout import DataLayout
from retrieval.base import Passage
from retrieval.config import PLAIN_INT8, DenseSettings, SpladeSettings
from retrieval.encoders.batching import length_batches
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.loading import default_dense_path, default_splade_path
from retrieval.encoders.onnx_export import SMOOTHING_FILES, build, files_digest, quantisation
from retrieval.encoders.onnx_model import MODEL_FILE, cache_fingerprint, cache_folder, damage
from retrieval.encoders.splade import SpladeEncoder
from retrieval.encoders.tokenizer import load_tokenizer
from retrieval.errors import ModelLoadError

N_PASSAGES = 48


@pytest.fixture(scope="module")
def queries(tiny_world: Path) -> list[str]:
    """20 logged tiny-world queries: real ones, with matching blocks."""
    impressions = DataLayout(tiny_world).read_events("impressions", validate_rows=False)
    return random.Random(1).sample(sorted(set(impressions["query"].to_pylist())), 20)


@pytest.fixture(scope="module")
def texts(tiny_passages: list[Passage], queries: list[str]) -> list[str]:
    """48 tiny-world blocks (shuffled, so lengths are mixed), then the 20 queries."""
    return [p.text for p in random.Random(0).sample(tiny_passages, N_PASSAGES)] + queries


def _splade(backend: str, int8: bool = False, **kw: object) -> SpladeEncoder:
    return SpladeEncoder(SpladeSettings(backend=backend, int8=int8), index_threads=2, **kw).load()  # type: ignore[arg-type]


def _dense(backend: str, int8: bool = False) -> DenseEncoder:
    return DenseEncoder(DenseSettings(backend=backend, int8=int8), index_threads=2).load()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def splade_torch() -> SpladeEncoder:
    return _splade("torch")


@pytest.fixture(scope="module")
def dense_torch() -> DenseEncoder:
    return _dense("torch")


@pytest.fixture(scope="module")
def dense_reference(dense_torch: DenseEncoder, texts: list[str]) -> np.ndarray:
    """torch fp32 vectors of ``texts``: computed once, the slowest part of this module."""
    return dense_torch.encode_documents(texts)


@pytest.fixture(scope="module")
def splade_reference(splade_torch: SpladeEncoder, texts: list[str]) -> list[dict[str, int]]:
    return splade_torch.encode_documents(texts)


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_dense_onnx_agrees_with_torch(
    int8: bool, dense_torch: DenseEncoder, dense_reference: np.ndarray, texts: list[str]
) -> None:
    onnx = _dense("onnx", int8)
    reference, vectors = dense_reference, onnx.encode_documents(texts)
    cosine = (reference * vectors).sum(axis=1)
    if int8:
        # Quantised weights move the vectors a little; retrieval quality is checked on its own.
        assert cosine.mean() > 0.99 and cosine.min() > 0.97, cosine.min()
    else:
        assert cosine.min() > 0.999, cosine.min()
        np.testing.assert_allclose(
            onnx.encode_query(texts[-1]), dense_torch.encode_query(texts[-1]), atol=1e-5
        )
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_splade_onnx_fp32_gives_the_torch_weights(
    splade_torch: SpladeEncoder, splade_reference: list[dict[str, int]], texts: list[str]
) -> None:
    onnx = _splade("onnx")
    np.testing.assert_allclose(onnx.weights(texts[:4]), splade_torch.weights(texts[:4]), atol=1e-4)
    pairs = zip(onnx.encode_documents(texts), splade_reference, strict=True)
    same = sum(a == b for a, b in pairs)
    assert same >= len(texts) - 2  # a weight on a rounding edge may flip one integer impact


def test_splade_onnx_int8_keeps_the_vast_majority_of_term_weights(
    splade_reference: list[dict[str, int]], texts: list[str]
) -> None:
    onnx = _splade("onnx", int8=True)
    agree = total = 0
    for a, b in zip(onnx.encode_documents(texts), splade_reference, strict=True):
        terms = set(a) | set(b)
        total += len(terms)
        # within 0.1 of the float weight (10 impact points at scale 100); a term missing on one side is 0
        agree += sum(abs(a.get(t, 0) - b.get(t, 0)) <= 10 for t in terms)
    assert agree / total > 0.95, agree / total


def _top10(scores: np.ndarray) -> list[set[int]]:
    return [set(np.argsort(-row, kind="stable")[:10].tolist()) for row in scores]


def _sparse_scores(encoder: SpladeEncoder, queries: list[str], docs: list[dict[str, int]]) -> np.ndarray:
    """What the Lucene impact index computes: sum over shared terms of query weight x document impact."""
    rows = []
    for query in queries:
        weights = encoder.encode_query(query)
        rows.append([sum(w * d.get(t, 0) for t, w in weights.items()) for d in docs])
    return np.array(rows, dtype=float)


@pytest.mark.parametrize("name", ["dense", "splade"])
def test_int8_ranks_passages_like_torch(
    name: str,
    texts: list[str],
    queries: list[str],
    dense_reference: np.ndarray,
    splade_torch: SpladeEncoder,
    splade_reference: list[dict[str, int]],
) -> None:
    """Retrieval quality in miniature, every run: each logged query's top 10 of the 48 blocks under int8
    against torch fp32 (measured 0.95 dense and 0.99 SPLADE on 96 blocks and 30 queries)."""
    n = N_PASSAGES
    if name == "dense":
        vectors = _dense("onnx", int8=True).encode_documents(texts)
        reference = _top10(dense_reference[n:] @ dense_reference[:n].T)  # (queries, passages)
        measured = _top10(vectors[n:] @ vectors[:n].T)
    else:
        onnx = _splade("onnx", int8=True)
        reference = _top10(_sparse_scores(splade_torch, queries, splade_reference[:n]))
        measured = _top10(_sparse_scores(onnx, queries, onnx.encode_documents(texts[:n])))
    overlap = np.mean([len(a & b) / 10 for a, b in zip(reference, measured, strict=True)])
    assert overlap >= 0.9, overlap


def test_onnx_sessions_use_the_encoders_threads(texts: list[str]) -> None:
    encoder = SpladeEncoder(SpladeSettings(backend="onnx", int8=False), threads=2, index_threads=2).load()
    model = encoder._onnx
    assert model.session(2).get_session_options().intra_op_num_threads == 2  # a query: the worker's threads
    encoder.encode_documents(texts)
    # index encoding: index_threads one-thread runs side by side on a one-thread session
    assert sorted(model._sessions) == [1, 2]
    assert model.session(1).get_session_options().intra_op_num_threads == 1


def test_cache_is_reused_and_a_truncated_file_is_exported_again(
    tmp_path: Path, texts: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smartblock.retrieval")
    first = _splade("onnx", onnx_cache_dir=tmp_path)
    folder = first._onnx.path.parent
    assert folder.parent == tmp_path and (folder / "fingerprint.json").is_file()
    expected = first.weights(texts[:4])
    written = (folder / MODEL_FILE).stat().st_mtime_ns
    caplog.clear()

    again = _splade("onnx", onnx_cache_dir=tmp_path)
    assert again._onnx.path == first._onnx.path
    assert (folder / MODEL_FILE).stat().st_mtime_ns == written  # reused, not written again
    assert not any("export" in r.getMessage() for r in caplog.records)

    model = folder / MODEL_FILE
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])  # a disk that filled up mid-write
    healed = _splade("onnx", onnx_cache_dir=tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("damaged" in w and "bytes" in w for w in warnings), warnings
    np.testing.assert_allclose(healed.weights(texts[:4]), expected, atol=1e-6)
    assert damage(folder, cache_fingerprint(str(default_splade_path()), "splade", None)) is None

    # Cut short and resealed (size and sha256 recomputed, as a save onto a full disk might leave it): the
    # checksums pass, ONNX Runtime refuses the file, and it is exported once more.
    model.write_bytes(model.read_bytes()[:4096])
    found = json.loads((folder / "fingerprint.json").read_text())
    found.update(model_bytes=4096, model_sha256=hashlib.sha256(model.read_bytes()).hexdigest())
    (folder / "fingerprint.json").write_text(json.dumps(found))
    caplog.clear()
    resealed = _splade("onnx", onnx_cache_dir=tmp_path)
    assert any("refused" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(resealed.weights(texts[:4]), expected, atol=1e-6)


def test_a_changed_byte_or_lost_fingerprint_counts_as_damage(tmp_path: Path) -> None:
    path = str(default_splade_path())
    expected = cache_fingerprint(path, "splade", None)
    source = _splade("onnx")._onnx.path.parent  # the shared cache's export, copied: not re-exported here
    folder = tmp_path / source.name
    import shutil

    shutil.copytree(source, folder)
    assert damage(folder, expected) is None
    raw = bytearray((folder / MODEL_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (folder / MODEL_FILE).write_bytes(bytes(raw))
    assert "sha256" in (damage(folder, expected) or "")
    (folder / "fingerprint.json").unlink()
    assert "fingerprint" in (damage(folder, expected) or "")


def test_an_unwritable_cache_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelLoadError, match="not writable"):
        _splade("onnx", onnx_cache_dir=blocker / "cache")


def test_cache_key_changes_with_what_the_graph_depends_on() -> None:
    path = str(default_splade_path())
    fp32 = cache_fingerprint(path, "splade", None)
    int8 = cache_fingerprint(path, "splade", quantisation(True))
    layer0 = cache_fingerprint(path, "splade", quantisation(True, (0,)))
    smoothed = cache_fingerprint(path, "splade", quantisation(True, smoothing=0.5))
    out0 = cache_fingerprint(path, "splade", quantisation(True, fp32_feed_forward_out=(0,)))
    assert {"model", "export_code", "opset", "torch", "onnx", "onnxruntime", "machine"} <= set(fp32)
    assert len({cache_folder(Path("c"), f) for f in (fp32, int8, layer0, smoothed, out0)}) == 5
    assert cache_folder(Path("c"), fp32) != cache_folder(Path("c"), {**fp32, "onnxruntime": "0.0"})


def test_length_batches_sort_by_tokens_and_cover_every_passage(texts: list[str]) -> None:
    tokenizer = load_tokenizer(str(default_splade_path()))
    seen: list[int] = []
    for positions, ids, mask in length_batches(tokenizer, texts, max_length=64, batch_size=5):
        lengths = mask.sum(axis=1)
        assert list(lengths) == sorted(lengths, reverse=True)  # longest first: little padding per batch
        assert ids.shape == mask.shape and ids.shape[1] == lengths.max() <= 64
        assert (ids[mask == 0] == tokenizer.pad_token_id).all()
        seen.extend(positions.tolist())
    assert sorted(seen) == list(range(len(texts)))


@pytest.mark.parametrize(("backend", "int8"), [("torch", False), ("onnx", False), ("onnx", True)])
def test_documents_come_back_in_their_order(
    backend: str, int8: bool, dense_torch: DenseEncoder, dense_reference: np.ndarray, texts: list[str]
) -> None:
    """Sorted by length inside, restored outside: each row equals that text encoded alone (int8 included:
    it encodes one passage per run, so batch-mates cannot move its activation scales)."""
    dense = dense_torch if backend == "torch" else _dense(backend, int8)
    batch = dense_reference if backend == "torch" else dense.encode_documents(texts)
    for i in (0, 11, N_PASSAGES - 1, len(texts) - 1):
        np.testing.assert_allclose(batch[i], dense.encode_query(texts[i]), atol=1e-5)


def test_fp32_parts_that_match_no_matmul_fail_clearly(tmp_path: Path) -> None:
    # Layer 99 of a 6-layer model: the export names it, even beside a layer that exists.
    settings = DenseSettings(backend="onnx", int8=True, fp32_layers=(0, 99))
    with pytest.raises(ModelLoadError, match=r"fp32_layers \[99\] match no MatMul"):
        DenseEncoder(settings, onnx_cache_dir=tmp_path).load()
    settings = DenseSettings(backend="onnx", int8=True, fp32_feed_forward_out=(0, 7))
    with pytest.raises(ModelLoadError, match=r"fp32_feed_forward_out \[7\] match no MatMul"):
        DenseEncoder(settings, onnx_cache_dir=tmp_path).load()
    with pytest.raises(ValidationError):
        DenseSettings(fp32_layers=(-1,))
    with pytest.raises(ValidationError):
        DenseSettings(smoothing=1.5)
    assert DenseSettings(fp32_layers=(1, 0, 1)).fp32_layers == (0, 1)  # one spelling per set
    assert DenseSettings(fp32_feed_forward_out=(2, 0, 2)).fp32_feed_forward_out == (0, 2)


def test_the_dense_default_brings_int8_closer_to_fp32(dense_reference: np.ndarray, texts: list[str]) -> None:
    """What the dense default's smoothing and fp32 feed-forward output are for: its vectors sit closer to
    fp32 than every product int8 unsmoothed, and at least as close as the whole first layer in fp32 (the
    default before)."""
    variants = {"plain": PLAIN_INT8, "layer0": {**PLAIN_INT8, "fp32_layers": (0,)}, "default": {}}
    gap = {}
    for label, options in variants.items():
        encoder = DenseEncoder(DenseSettings(**options), index_threads=2)  # type: ignore[arg-type]
        vectors = encoder.load().encode_documents(texts)
        gap[label] = 1.0 - float((vectors * dense_reference).sum(axis=1).mean())
    # On 300 small-world blocks and 300 CISI passages: 0.0057 / 0.0063 plain, 0.0044 / 0.0048 layer 0,
    # 0.0039 / 0.0042 the default (docs/retrieval.md, thirteenth session).
    assert gap["default"] < 0.85 * gap["plain"], gap
    assert gap["default"] <= gap["layer0"], gap


def test_smoothing_keeps_the_fp32_function(texts: list[str]) -> None:
    """The smoothed module computes what the checkpoint computes (in fp32, up to rounding), and every layer's
    feed-forward input product is smoothed; a module without one fails clearly."""
    import torch

    from retrieval.encoders.onnx_export import graph_module
    from retrieval.encoders.smoothing import ScaledInput, calibration_texts, smooth_feed_forward

    assert len(calibration_texts()) >= 30  # the shipped file is read (package data)
    module, tokenizer = graph_module(str(default_dense_path()), "mean", attention="eager")
    batch = tokenizer(texts[:8], return_tensors="pt", padding=True, truncation=True, max_length=256)
    with torch.inference_mode():
        before = module(batch["input_ids"], batch["attention_mask"]).numpy()
    assert smooth_feed_forward(module, tokenizer, 0.5) == 6
    scaled = [m for m in module.modules() if isinstance(m, ScaledInput)]
    assert len(scaled) == 6 and all(float(m.inverse.max() / m.inverse.min()) > 2 for m in scaled)
    with torch.inference_mode():
        after = module(batch["input_ids"], batch["attention_mask"]).numpy()
    np.testing.assert_allclose(after, before, atol=2e-5)
    with pytest.raises(ValueError, match="no feed-forward product"):
        smooth_feed_forward(torch.nn.Sequential(torch.nn.Linear(4, 4)), tokenizer, 0.5)


@pytest.mark.parametrize(
    ("pooling", "quantised", "expected"),
    [
        # The pooling's one Mul, and the smoothing's one per layer.
        ("mean", quantisation(True, (0,)), {"QAttention": 5, "Attention": 1, "MatMul": 3, "Mul": 1}),
        ("mean", quantisation(True, (), (0,), 0.5), {"QAttention": 6, "MatMul": 1, "Mul": 7}),
        ("splade", quantisation(True), {"QAttention": 2}),
        ("mean", None, {}),  # fp32: no attention fused, no layer norm either
    ],
    ids=["dense-layer0", "dense-default", "splade", "dense-fp32"],
)
def test_graphs_fuse_attention_and_leave_layer_norms_unfused(
    tmp_path: Path, pooling: str, quantised: dict | None, expected: dict[str, int]
) -> None:
    """Both shipped encoders fuse every layer's attention; the products kept fp32 stay plain MatMuls; the
    smoothing adds one Mul per layer; no residual layer norm is fused (``UNFUSED``: a slow kernel)."""
    import onnx

    path = default_dense_path() if pooling == "mean" else default_splade_path()
    model = build(str(path), pooling, quantised, tmp_path)  # type: ignore[arg-type]
    ops = [n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node]
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL_FILE]  # scratch files removed
    if quantised is None:
        assert "SkipLayerNormalization" not in ops and "QAttention" not in ops
        assert ops.count("LayerNormalization") == 13  # the embeddings' and two per layer
        return
    counted = ("QAttention", "Attention", "MatMul", "SkipLayerNormalization")
    want = {"Attention": 0, "MatMul": 0, "SkipLayerNormalization": 0, **expected}
    assert {op: ops.count(op) for op in (*counted, *expected)} == want
    layers, head = (6, 0) if pooling == "mean" else (2, 1)  # SPLADE's MLM head has a norm of its own
    assert ops.count("LayerNormalization") == 2 * layers + head  # the residual norms, unfused
    assert ops.count("EmbedLayerNormalization") == 1  # the embeddings' norm still fuses


def test_index_identity_names_the_precision() -> None:
    identity = {
        label: DenseEncoder(DenseSettings(**options)).identity()  # type: ignore[arg-type]
        for label, options in {
            "torch": {"backend": "torch"},
            "fp32": {"int8": False},
            "int8": PLAIN_INT8,
            "layer0": {"fp32_layers": (0,), "fp32_feed_forward_out": (), "smoothing": 0.0},
            "default": {},
        }.items()
    }
    assert identity["torch"] == identity["fp32"] and "int8" not in identity["torch"]
    assert identity["int8"].endswith(";int8w7qa;ln]")
    assert identity["layer0"].endswith(";int8w7qa;ln;fp32l0]")
    digest = files_digest(*SMOOTHING_FILES)[:8]
    assert identity["default"].endswith(f";int8w7qa;ln;fp32ffo0;sq0.5c{digest}]")
    assert len(digest) == 8
    # SPLADE keeps every product int8, unsmoothed (nothing more named in its identity).
    assert SpladeEncoder(SpladeSettings()).identity().endswith(";int8w7qa;ln]")
