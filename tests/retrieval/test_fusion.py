"""Fusion arithmetic and weight tuning on hand-made runs; members searched side by side on the real ones."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from retrieval.base import BaseRetriever, Hit, Passage
from retrieval.config import FusionSettings
from retrieval.errors import RetrievalError
from retrieval.fusion import FusedRetriever, fuse, tune, weight_grid
from retrieval.warmup import made_up_queries, warm_up


def run(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(i, s) for i, s in pairs]


def test_rrf_follows_the_formula() -> None:
    settings = FusionSettings(method="rrf", rrf_k=60, weights={"a": 1.0, "b": 1.0})
    fused = fuse({"a": run(("x", 9), ("y", 5)), "b": run(("y", 0.9), ("z", 0.1))}, settings, 10)
    scores = {h.id: h.score for h in fused}
    assert scores["y"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["x"] == pytest.approx(1 / 61)
    assert [h.id for h in fused] == ["y", "x", "z"]


def test_minmax_weighted_sum_and_sources() -> None:
    settings = FusionSettings(method="weighted", normalisation="minmax", weights={"a": 0.5, "b": 0.5})
    fused = fuse({"a": run(("x", 10), ("y", 6), ("w", 2)), "b": run(("y", 3), ("x", 1))}, settings, 10)
    by_id = {h.id: h for h in fused}
    assert by_id["x"].score == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert by_id["y"].score == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)
    assert by_id["w"].score == pytest.approx(0.0)  # last of a, missing from b: floor of both
    assert dict(by_id["x"].sources) == {"a": 10, "b": 1}


def test_zero_weight_mutes_a_member_but_keeps_its_scores_visible() -> None:
    settings = FusionSettings(weights={"good": 1.0, "noise": 0.0})
    fused = fuse({"good": run(("x", 2), ("y", 1)), "noise": run(("z", 100))}, settings, 3)
    assert [h.id for h in fused][:2] == ["x", "y"]
    assert fused[-1].id == "z" and fused[-1].score == 0.0


def test_a_single_hit_gets_full_credit() -> None:
    fused = fuse({"a": run(("x", 0.3))}, FusionSettings(), 5)
    assert fused == [Hit("x", 1.0, {"a": 0.3})]


def _fuse_by_dict(runs: dict[str, list[Hit]], settings: FusionSettings, k: int) -> list[Hit]:
    """The fusion written out per document (the definition the columnar ``fuse`` must equal, bit for bit)."""
    fused: dict[str, float] = {}
    sources: dict[str, dict[str, float]] = {}
    for name, hits in runs.items():
        for h in hits:
            sources.setdefault(h.id, {})[name] = h.score
            fused.setdefault(h.id, 0.0)
    for name, hits in runs.items():
        w = settings.weights.get(name, 1.0)
        if w == 0 or not hits:
            continue
        if settings.method == "rrf":
            for rank, h in enumerate(hits, start=1):
                fused[h.id] += w / (settings.rrf_k + rank)
            continue
        scores = np.array([h.score for h in hits])
        if settings.normalisation == "minmax":
            span = scores.max() - scores.min()
            values = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
            floor = 0.0
        else:
            sd = scores.std()
            values = (scores - scores.mean()) / sd if sd > 0 else np.zeros_like(scores)
            floor = float(values.min())
        norm = {h.id: float(v) for h, v in zip(hits, values, strict=True)}
        for doc in sources:
            fused[doc] += w * norm.get(doc, floor)
    best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [Hit(doc, score, sources[doc]) for doc, score in best]


@pytest.mark.parametrize(
    "settings",
    [
        FusionSettings(method="weighted", normalisation="minmax", weights={"a": 1.0, "b": 0.7, "c": 0.0}),
        FusionSettings(method="weighted", normalisation="zscore", weights={"a": 0.3, "b": 1.0, "c": 0.5}),
        FusionSettings(method="rrf", rrf_k=60, weights={"a": 1.0, "b": 2.0, "c": 0.5}),
    ],
)
def test_columnar_fusion_equals_the_per_document_sum(settings: FusionSettings) -> None:
    """Random runs with overlaps, tied scores (ties break on the id), an empty member and a muted one."""
    import random

    rng = random.Random(3)
    pool = [f"b{i:04d}" for i in range(300)]
    for _ in range(50):
        runs = {
            name: sorted(
                (
                    Hit(d, float(rng.choice([rng.random(), 0.5, 1.0])))
                    for d in rng.sample(pool, rng.randint(0, 120))
                ),
                key=lambda h: -h.score,
            )
            for name in ("a", "b", "c")
        }
        k = rng.choice([1, 10, 100, 400])
        assert fuse(runs, settings, k) == _fuse_by_dict(runs, settings, k)


def test_weight_grid_covers_the_simplex() -> None:
    grid = weight_grid(["a", "b", "c"], 0.5)
    assert len(grid) == 6
    assert all(sum(w.values()) == pytest.approx(1.0) for w in grid)


def test_tune_mutes_a_member_that_only_hurts() -> None:
    # "good" ranks the relevant doc first on every query; "noise" ranks it last.
    queries = [f"q{i}" for i in range(8)]
    good = [run((f"{q}-rel", 1.0), (f"{q}-a", 0.5), (f"{q}-b", 0.4)) for q in queries]
    noise = [run((f"{q}-a", 9.0), (f"{q}-b", 8.0), (f"{q}-rel", 0.1)) for q in queries]

    def top1(fused: list[list[Hit]]) -> float:
        return sum(f[0].id.endswith("-rel") for f in fused) / len(fused)

    tuned, value = tune({"good": good, "noise": noise}, top1, FusionSettings(grid_step=0.25), 3)
    assert value == pytest.approx(1.0)
    assert tuned.weights["good"] > tuned.weights["noise"]
    fused = [fuse({"good": g, "noise": n}, tuned, 3) for g, n in zip(good, noise, strict=True)]
    assert top1(fused) == 1.0


def test_tune_refuses_misaligned_runs() -> None:
    with pytest.raises(RetrievalError, match="different numbers of queries"):
        tune({"a": [run(("x", 1))], "b": []}, lambda f: 0.0, FusionSettings(), 3)


def test_bad_fusion_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        FusionSettings(weights={"a": -1.0})


def test_members_searched_side_by_side_answer_as_one_after_the_other(
    world_retrievers: dict[str, BaseRetriever],
) -> None:
    # The real members (SPLADE on Lucene, dense on FAISS, behavioural), asked from 6 request threads at once.
    fused = world_retrievers["fused"]
    assert isinstance(fused, FusedRetriever)
    serial = FusedRetriever(fused.members, fused.settings, threads=1)
    side = FusedRetriever(fused.members, fused.settings, threads=3)
    seen: set[str] = set()
    members = dict(side.members)

    def searched_on(name: str) -> object:
        def search(query: str, k: int) -> list[Hit]:
            seen.add(f"{name}@{threading.current_thread().name.split('_')[0]}")
            return members[name].search(query, k)

        return search

    for name in members:
        side.members[name] = type("Observed", (), {"search": staticmethod(searched_on(name))})()
    queries = ["jeju", "seoul food", "busan beach hotel", "galbi jjim", "hiking trails", "museum"]
    want = [serial.search(q, 20) for q in queries]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda q: side.search(q, 20), queries))
    assert [[(h.id, h.score) for h in hits] for hits in got] == [
        [(h.id, h.score) for h in hits] for hits in want
    ]
    # Six requests on two side threads: the others' members went to the pool while a thread was free.
    assert "member-search" in {s.split("@")[1] for s in seen if not s.startswith(next(iter(members)))}


def test_a_member_runs_in_the_request_thread_while_the_pool_is_busy(
    world_retrievers: dict[str, BaseRetriever],
) -> None:
    fused = world_retrievers["fused"]
    assert isinstance(fused, FusedRetriever)
    side = FusedRetriever(fused.members, fused.settings, threads=2)  # one pool thread
    second = list(side.members)[1]
    held, release = threading.Event(), threading.Event()
    where: list[str] = []
    real = side.members[second]

    def search(query: str, k: int) -> list[Hit]:
        where.append(threading.current_thread().name)
        if query == "jeju":  # the first request's member keeps the only pool thread busy
            held.set()
            assert release.wait(30)
        return real.search(query, k)

    side.members[second] = type("Observed", (), {"search": staticmethod(search)})()
    with ThreadPoolExecutor(1) as requests:
        blocked = requests.submit(side.search, "jeju", 20)
        try:
            assert held.wait(30)
            # The pool's thread is taken: this request searches its member itself instead of queueing behind.
            hits = side.search("seoul food", 20)
            assert not blocked.done()
        finally:
            release.set()
        blocked.result(30)
    assert where[0].startswith("member-search") and where[1] == threading.current_thread().name
    assert [(h.id, h.score) for h in hits] == [
        (h.id, h.score) for h in FusedRetriever(fused.members, fused.settings).search("seoul food", 20)
    ]


def test_warm_up_searches_made_up_queries_and_leaves_no_encodings_cached(
    world_retrievers: dict[str, BaseRetriever], tiny_passages: list[Passage]
) -> None:
    fused = world_retrievers["fused"]
    titles = [p.text for p in tiny_passages]
    queries = made_up_queries(titles, 40, seed=3)
    assert len(queries) == len(set(queries)) == 40 and queries == made_up_queries(titles, 40, seed=3)
    assert all(1 <= len(q.split()) <= 3 for q in queries)
    done = warm_up(fused, titles, 40, k=20, seed=3)
    assert done.queries == 40 and done.seconds > 0
    encoders = [m.encoder for m in fused.members.values() if hasattr(m, "encoder")]
    assert len(encoders) == 2 and all(len(e.cache) == 0 for e in encoders)
    assert made_up_queries([], 5) == []


def test_best_first_equals_a_lexsort_of_every_id() -> None:
    """The top k by score, ties to the smaller id, whatever ties, infinities, signed zeros or NaNs hold:
    sorting only the ids that can reach the top k gives the order of sorting them all."""
    import random

    from retrieval.fusion import _best_first

    rng = random.Random(5)
    values = [0.0, -0.0, 0.5, 1.0, -1.0, np.inf, -np.inf, np.nan]
    for _ in range(400):
        n = rng.randint(0, 40)
        fused = np.array([rng.choice([*values, rng.random()]) for _ in range(n)], dtype=float)
        ids = rng.sample([f"b{i:03d}" for i in range(100)] + ["é", "e", "B1", "b1"], n)
        for k in {0, 1, max(n - 1, 1), n, n + 5}:
            expected = np.lexsort((np.array(ids, dtype=str), -fused))[:k]
            assert _best_first(fused, ids, k).tolist() == expected.tolist()


def test_hits_pickle_and_copy() -> None:
    """A member's hit shares one read-only empty ``sources``; pickling and deep copies still work. What
    pickling stores is rebuilt here from the hit's reduction, as unpickling would, without loading one."""
    import copy
    import pickle

    plain, fused = Hit("a", 1.0), Hit("b", 0.5, {"dense": 0.2})
    for hit in (plain, fused):
        assert pickle.dumps(hit)
        rebuild, args = hit.__reduce__()
        assert rebuild(*args) == hit
        assert copy.deepcopy(hit) == hit
    with pytest.raises(TypeError):
        plain.sources["x"] = 1.0  # type: ignore[index]
