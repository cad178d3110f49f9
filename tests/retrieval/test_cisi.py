"""Scores on the CISI collection against the expected values in cisi_expected.yaml (slow: builds indexes).

Runs when ../shared/data is present and SMARTBLOCK_RUN_SLOW=1; reproduce by hand with
``smartblock retrieval eval --beir ../shared/data/ir/cisi --json``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from retrieval.config import DenseSettings, RetrievalSettings, SpladeSettings
from retrieval.evaluate import evaluate_beir

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CISI = SHARED_DATA / "ir" / "cisi"
EXPECTED = yaml.safe_load((Path(__file__).parent / "cisi_expected.yaml").read_text())

pytestmark = [
    pytest.mark.slow,
    pytest.mark.shared_data,
    pytest.mark.skipif(not CISI.is_dir(), reason="../shared/data/ir/cisi is absent"),
    pytest.mark.skipif(os.environ.get("SMARTBLOCK_RUN_SLOW") != "1", reason="set SMARTBLOCK_RUN_SLOW=1"),
]


def test_fused_beats_every_single_retriever_on_held_out_queries(tmp_path: Path) -> None:
    # The expected values are the torch fp32 reference; test_encoder_quality.py holds ONNX within 0.01.
    settings = RetrievalSettings(splade=SpladeSettings(backend="torch"), dense=DenseSettings(backend="torch"))
    result = evaluate_beir(CISI, settings, tmp_path / "cisi")
    result.pop("_eval")
    for system, metrics in EXPECTED["test_split"].items():
        for metric, value in metrics.items():
            assert result[system][metric] == pytest.approx(value, abs=EXPECTED["tolerance"]), (system, metric)
    best = max(result[s]["ndcg@10"] for s in ("bm25", "splade", "dense"))
    assert result["fused"]["ndcg@10"] >= best
