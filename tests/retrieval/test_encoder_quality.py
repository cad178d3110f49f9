"""Retrieval quality holds on the ONNX backend: within 0.01 of the torch fp32 encoders, over whole indexes.

Slow, so gated by ``SMARTBLOCK_RUN_SLOW=1`` like test_cisi.py: the torch reference indexes cost about as much
as the rest of the retrieval tests (the tiny-world check alone ran 106 s on this shared 2-core machine, 70 s
of them for torch). Every run checks the same in miniature in test_onnx_encoders.py: the vectors (dense cosine
> 0.999 fp32, SPLADE fp32 weights within 1e-4, int8 impacts within 0.1 for > 95% of terms) and each logged
query's top 10 of 48 tiny-world blocks, int8 against torch.

- Tiny world: recall@100 of SPLADE and dense, each built and scored as ``evaluate_world`` does. The default
  backend (ONNX int8) shares the session's index folder with the conformance tests (same fingerprint).
- CISI (``../shared/data``, skipped when absent): nDCG@10 and recall@100 on the test split against the torch
  values in cisi_expected.yaml. Measured on a Zen 4 EPYC (benchmarks/bench_encoder_quality.py, the fifth
  session, when the dense default kept layer 0 fp32): ONNX fp32 equal to torch to 4 decimals; int8 nDCG@10
  +0.0024 (SPLADE) and -0.0004 (dense), recall@100 -0.0074 and +0.0017. On 42 queries a recall@100
  difference has a 95% interval about 0.025 wide
  (``--paired``): a failure by a few thousandths on another CPU may be noise; docs/retrieval.md has them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from retrieval.config import RetrievalSettings
from retrieval.evaluate import evaluate_beir, evaluate_world

TOLERANCE = 0.01
ENCODERS = ("splade", "dense")
BACKENDS = {
    "torch": {"backend": "torch", "int8": False},
    "onnx-fp32": {"backend": "onnx", "int8": False},
    "onnx-int8": {"backend": "onnx", "int8": True},
}
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CISI = SHARED_DATA / "ir" / "cisi"
RUN_SLOW = pytest.mark.skipif(
    os.environ.get("SMARTBLOCK_RUN_SLOW") != "1", reason="set SMARTBLOCK_RUN_SLOW=1"
)


def settings_for(label: str, index_dir: Path) -> RetrievalSettings:
    """Both encoders on one backend; the default settings otherwise."""
    base = RetrievalSettings()
    return RetrievalSettings(
        index_dir=index_dir,
        members=list(ENCODERS),
        splade=base.splade.model_copy(update=BACKENDS[label]),
        dense=base.dense.model_copy(update=BACKENDS[label]),
    )


def _is_default(label: str) -> bool:
    base = RetrievalSettings()
    return all(getattr(s, k) == v for s in (base.splade, base.dense) for k, v in BACKENDS[label].items())


@pytest.fixture(scope="module")
def world_recall(
    tiny_world: Path, index_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], dict]:
    """recall@100 per encoder for a backend label, computed once per module."""
    done: dict[str, dict] = {}

    def recall(label: str) -> dict:
        if label not in done:
            # The default backend shares the session's index folder (the conformance tests' indexes).
            folder = index_dir if _is_default(label) else tmp_path_factory.mktemp(f"quality-{label}")
            result = evaluate_world(tiny_world, settings_for(label, folder))
            done[label] = {name: result[name]["recall@100"] for name in ENCODERS}
        return done[label]

    return recall


@pytest.mark.slow
@RUN_SLOW
@pytest.mark.parametrize("label", ["onnx-int8", "onnx-fp32"])
def test_world_recall_holds(label: str, world_recall: Callable[[str], dict]) -> None:
    reference, measured = world_recall("torch"), world_recall(label)
    for name in ENCODERS:
        assert measured[name] == pytest.approx(reference[name], abs=TOLERANCE), (name, measured, reference)


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not CISI.is_dir(), reason="../shared/data/ir/cisi is absent")
@RUN_SLOW
@pytest.mark.parametrize("label", ["onnx-fp32", "onnx-int8"])
def test_cisi_ndcg_holds(label: str, tmp_path: Path) -> None:
    expected = yaml.safe_load((Path(__file__).parent / "cisi_expected.yaml").read_text())["test_split"]
    result = evaluate_beir(CISI, settings_for(label, tmp_path), tmp_path, members=ENCODERS)
    for name in ENCODERS:
        for metric in ("ndcg@10", "recall@100"):
            measured, reference = result[name][metric], expected[name][metric]
            assert measured == pytest.approx(reference, abs=TOLERANCE), (name, metric, measured, reference)
