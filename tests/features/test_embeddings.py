"""M3 user embeddings: model shapes and gate, seeded determinism, no leakage past the cutoff, save/load,
vectors in a real Redis, refresh of active users only, and the CLI end to end on the tiny world."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import features.embeddings.model as model_module
from data.days import NotEnoughDays, split_days
from data.days import day_start_ms as day_ms
from data.layout import DataLayout
from features.config import FeatureStoreSettings
from features.embeddings.baselines import _prefix_sums, window_vectors
from features.embeddings.config import SPARSE_FROM_ITEMS, EmbeddingSettings
from features.embeddings.errors import ModelFormatError
from features.embeddings.model import M3
from features.embeddings.persist import load_current, load_model, save_model
from features.embeddings.pipeline import refresh_user_vectors, train_user_embeddings, vocabulary
from features.embeddings.sequences import build_sequences
from features.embeddings.store import (
    read_refresh_state,
    read_vectors,
    similarity_from_hashes,
    write_vectors,
)
from features.embeddings.train import fit, optimisers_for
from features.store import RedisFeatureStore
from search.cli import embeddings as embeddings_cli
from search.cli import ranking as ranking_cli


def tiny_settings(model_dir: Path, **kw: object) -> EmbeddingSettings:
    base = dict(
        dim=16, mid_items=4, max_history=12, epochs=2, patience=2, batch_size=128, negatives=64,
        valid_days=1, test_days=1, eval_max_events=400, threads=1, seed=3, model_dir=model_dir,
    )  # fmt: skip
    return EmbeddingSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_seqs(tiny_world: Path):
    layout = DataLayout(tiny_world)
    return layout, build_sequences(layout, vocabulary(layout, validate_rows=False), validate_rows=False)


def test_model_doctest_runs() -> None:
    result = doctest.testmod(model_module, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_model_shapes_and_gate_sums_to_one() -> None:
    torch.manual_seed(0)
    m3 = M3(n_items=30, dim=8, short_items=2, mid_items=3)
    items = torch.randint(1, 30, (5, 7))
    items[:2, :4] = 0  # left padding
    gaps = torch.where(items > 0, torch.randint(1, 20, (5, 7)), 0)
    user, gate = m3(items, gaps, torch.randint(1, 20, (5,)))
    assert user.shape == (5, 8) and gate.shape == (5, 3)
    assert torch.allclose(gate.sum(1), torch.ones(5)) and (gate > 0).all()
    assert m3.score(user).shape == (5, 29)
    # Padding does not move the vector: the same history with more padding gives the same output.
    m3.eval()
    a, _ = m3(items[2:3, -3:], gaps[2:3, -3:], torch.tensor([4]))
    wide = torch.cat([torch.zeros(1, 2, dtype=torch.long), items[2:3, -3:]], 1)
    b, _ = m3(wide, torch.cat([torch.zeros(1, 2, dtype=torch.long), gaps[2:3, -3:]], 1), torch.tensor([4]))
    assert torch.allclose(a, b, atol=1e-6)


def test_sequences_hold_only_events_before_the_cutoff(tiny_seqs) -> None:
    layout, full = tiny_seqs
    days = layout.days("impressions")
    cutoff = day_ms(days[2])
    cut = build_sequences(layout, full.block_ids, before_ms=cutoff, validate_rows=False)
    assert cut.n_events > 0 and (cut.ts_ms < cutoff).all() and (cut.req_ms < cutoff).all()
    assert (full.ts_ms >= cutoff).any()  # the cutoff did remove later events
    # Filtering in memory is the same as reading with the cutoff; histories only look back.
    again = full.before(cutoff)
    for name in ("item", "ts_ms", "req_ms", "prev_gap_ms", "offsets", "user"):
        assert np.array_equal(getattr(cut, name), getattr(again, name)), name
    assert list(cut.user_ids) == list(again.user_ids)
    ends = np.flatnonzero(cut.position() >= 1)
    items, _, last = cut.histories(cut.user[ends], ends, 8)
    assert (last < ends).all() and (cut.ts_ms[last] <= cut.ts_ms[ends]).all()
    assert (items[:, -1] == cut.item[ends - 1]).all()
    # Sorted by (user, time), each user's events in one range.
    assert (np.diff(cut.user) >= 0).all()
    same = cut.user[1:] == cut.user[:-1]
    assert (np.diff(cut.ts_ms)[same] >= 0).all()


def test_split_needs_enough_days(tiny_seqs) -> None:
    layout, _ = tiny_seqs
    days = layout.days("impressions")
    split = split_days(days, valid_days=1, test_days=1)
    assert split.train == (days[0], days[-3]) and split.test == (days[-1], days[-1])
    with pytest.raises(NotEnoughDays, match="training needs at least one day"):
        split_days(days, valid_days=2, test_days=2)


def test_k_window_vectors_match_a_direct_computation(tiny_seqs) -> None:
    _, seqs = tiny_seqs
    rng = np.random.default_rng(0)
    item_vecs = rng.normal(size=(seqs.n_items - 1, 4))
    u = int(np.argmax(np.diff(seqs.offsets)))  # the busiest user
    end = int(seqs.offsets[u + 1])
    as_of = int(seqs.ts_ms[end - 1]) + 1
    vecs, present = window_vectors(
        seqs, _prefix_sums(seqs, item_vecs), np.array([u]), np.array([end]), np.array([as_of]), (1.0, 0.0)
    )
    for w, days in enumerate((1.0, 0.0)):
        sel = np.arange(seqs.offsets[u], end)
        if days:
            sel = sel[seqs.ts_ms[sel] >= as_of - days * 86_400_000]
        mean = item_vecs[seqs.item[sel] - 1].mean(0)
        assert present[w, 0] and np.allclose(vecs[w, 0], mean / np.linalg.norm(mean))


def test_training_is_deterministic_with_a_seed(tiny_seqs, tmp_path: Path) -> None:
    layout, full = tiny_seqs
    s = tiny_settings(tmp_path, epochs=1)
    split = split_days(layout.days("impressions"), valid_days=1, test_days=1)
    train, valid = full.before(split.valid_start_ms), full.before(split.test_start_ms)
    targets = np.flatnonzero((valid.ts_ms >= split.valid_start_ms) & (valid.position() >= 1))
    a, _ = fit(train, valid, targets, s)
    b, _ = fit(train, valid, targets, s)
    c, _ = fit(train, valid, targets, s.model_copy(update={"seed": 4}))
    for name, value in a.state_dict().items():
        assert torch.allclose(value, b.state_dict()[name]), name
    assert not torch.allclose(a.items.weight, c.items.weight)


def test_a_sparse_item_table_updates_only_the_rows_a_step_used() -> None:
    torch.manual_seed(0)
    settings = EmbeddingSettings(sparse_items=True)
    model = M3(n_items=40, dim=8, short_items=1, mid_items=3, sparse=True)
    optimisers = optimisers_for(model, settings)
    assert [type(o).__name__ for o in optimisers] == ["Adam", "SparseAdam"]
    before = model.items.weight.detach().clone()
    items = torch.tensor([[0, 3, 5], [2, 4, 6]])
    user, _ = model(items, torch.ones_like(items), torch.tensor([1, 1]))
    target, negs = torch.tensor([6, 7]), torch.tensor([10, 11, 12])  # 0-based: rows 7, 8 and 11-13
    logits = torch.cat(
        [(user * model.item_rows(target)).sum(1, keepdim=True), user @ model.item_rows(negs).T], 1
    )
    torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long)).backward()
    assert model.items.weight.grad.is_sparse
    for opt in optimisers:
        opt.step()
    changed = (model.items.weight.detach() != before).any(1).nonzero().flatten().tolist()
    assert changed == [2, 3, 4, 5, 6, 7, 8, 11, 12, 13]  # history rows, targets and negatives only


def test_the_item_table_is_sparse_on_large_catalogues_only() -> None:
    auto = EmbeddingSettings()
    # n_items counts the padding row: SPARSE_FROM_ITEMS blocks stay dense, one more goes sparse.
    assert not auto.sparse_table(SPARSE_FROM_ITEMS + 1) and auto.sparse_table(SPARSE_FROM_ITEMS + 2)
    assert not EmbeddingSettings(weight_decay=1e-4).sparse_table(10**6)  # SparseAdam has no weight decay
    assert EmbeddingSettings(sparse_items=True).sparse_table(10)
    with pytest.raises(ValueError, match="weight_decay"):
        EmbeddingSettings(sparse_items=True, weight_decay=1e-4)


def test_sparse_training_is_deterministic_and_learns(tiny_seqs, tmp_path: Path) -> None:
    layout, full = tiny_seqs
    s = tiny_settings(tmp_path, epochs=2, sparse_items=True)
    split = split_days(layout.days("impressions"), valid_days=1, test_days=1)
    train, valid = full.before(split.valid_start_ms), full.before(split.test_start_ms)
    targets = np.flatnonzero((valid.ts_ms >= split.valid_start_ms) & (valid.position() >= 1))
    a, report = fit(train, valid, targets, s)
    b, _ = fit(train, valid, targets, s)
    assert a.items.sparse
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name
    history = [h["recall@10"] for h in report.history]
    assert history[-1] > history[0] > 0


@pytest.fixture(scope="module")
def trained(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Trained on the first three tiny days (the fourth comes later, for refresh)."""
    layout = DataLayout(tiny_world)
    settings = tiny_settings(tmp_path_factory.mktemp("m3"))
    result = train_user_embeddings(
        layout, settings, until=layout.days("impressions")[-1], validate_rows=False
    )
    return {"layout": layout, "settings": settings, "result": result}


def test_training_reports_every_method_and_saves_a_manifest(trained: dict) -> None:
    result = trained["result"]
    for method in ("m3", "popular", "average", "multi"):
        row = result["metrics"][method]
        assert 0 <= row["recall@10"] <= 1 and 0 < row["mrr"] <= 1 and row["events"] > 0
    manifest = json.loads((Path(result["folder"]) / "manifest.json").read_text())
    assert manifest["version"] == result["version"] and manifest["kind"] == "m3"
    assert set(manifest["files"]) == {"weights.safetensors", "blocks.json"}
    meta = manifest["metadata"]
    assert meta["dims"]["dim"] == 16 and meta["data_range"]["test"] == result["data_range"]["test"]
    assert meta["metrics"]["m3"]["recall@10"] == result["metrics"]["m3"]["recall@10"]


def test_save_load_round_trip(trained: dict, tmp_path: Path) -> None:
    saved = load_current(trained["settings"].model_dir)
    assert saved.version == trained["result"]["version"]
    again = save_model(saved.model, saved.block_ids, tmp_path, trained["settings"], make_current=False)
    assert again.name == saved.version  # the version is a digest of weights and vocabulary
    loaded = load_model(again)
    for name, value in saved.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[name]), name
    assert list(loaded.block_ids) == list(saved.block_ids)
    items = torch.tensor([[0, 3, 5, 9]])
    gaps = torch.tensor([[0, 1, 4, 6]])
    assert torch.equal(
        saved.model(items, gaps, torch.tensor([5]))[0], loaded.model(items, gaps, torch.tensor([5]))[0]
    )
    weights = again / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01  # one byte of the last tensor changed, the length kept
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match=r"weights\.safetensors: sha256 .* differs"):
        load_model(again)
    weights.unlink()
    with pytest.raises(ModelFormatError, match=r"weights\.safetensors, which is missing"):
        load_model(again)
    with pytest.raises(ModelFormatError, match="no trained M3 model"):
        load_current(tmp_path / "empty")


def test_vectors_written_and_read_back_from_redis(store: RedisFeatureStore) -> None:
    rng = np.random.default_rng(1)
    users = {"u1": rng.normal(size=8), "u2": rng.normal(size=8)}
    blocks = {f"b{i}": rng.normal(size=8) for i in range(4)}
    assert write_vectors(store, "m3-aaa", users=users, blocks=blocks) == 6
    write_vectors(store, "m3-old", blocks={"b3": rng.normal(size=8)})  # another model's space
    user_vec, mat, present = read_vectors(store, "u1", ["b0", "b1", "missing", "b3"])
    assert user_vec is not None and user_vec.dtype == np.float32
    assert np.allclose(user_vec, users["u1"], atol=2e-3 * np.abs(users["u1"]).max())  # float16
    assert present.tolist() == [True, True, False, False]
    assert np.allclose(mat[0], blocks["b0"].astype(np.float16)) and not mat[2].any()
    raw = store.client.hget(store.keys.user_vector("u1"), "v")
    assert len(raw) == 16 and store.client.hget(store.keys.user_vector("u1"), "m") == b"m3-aaa"
    assert store.client.ttl(store.keys.user_vector("u1")) > 0
    # The same result from hashes fetched in the assembler's own round trip.
    fetched = store.fetch(
        [(store.keys.user_vector("u1"), ["v", "m"]), (store.keys.block_vector("b0"), ["v", "m"])]
    )
    sim, ok = similarity_from_hashes(fetched[0], fetched[1:])
    expected = float(mat[0] @ user_vec / np.linalg.norm(mat[0]) / np.linalg.norm(user_vec))
    assert ok.tolist() == [True] and sim[0] == pytest.approx(expected, abs=1e-5)
    nobody, mat2, present2 = read_vectors(store, "nobody", ["b0"])
    assert nobody is None and present2.tolist() == [True] and mat2.shape == (1, 8)


def test_refresh_updates_only_active_users(trained: dict, store: RedisFeatureStore) -> None:
    layout, settings = trained["layout"], trained["settings"]
    saved = load_current(settings.model_dir)
    last_day = layout.days("impressions")[-1]
    # The vectors as training wrote them (through the last day before ``last_day``).
    before = build_sequences(layout, saved.block_ids, before_ms=day_ms(last_day), validate_rows=False)
    from features.embeddings.encode import latest_user_vectors

    vecs, _ = latest_user_vectors(
        saved.model, before, np.arange(len(before.user_ids)), int(before.ts_ms.max()), settings.max_history
    )
    write_vectors(store, saved.version, users=dict(zip(before.user_ids.tolist(), vecs, strict=True)))
    old = {u: store.client.hget(store.keys.user_vector(u), "v") for u in before.user_ids}
    with pytest.raises(Exception, match="pass --since"):
        refresh_user_vectors(layout, store, settings, validate_rows=False)
    result = refresh_user_vectors(layout, store, settings, since=last_day, validate_rows=False)
    full = build_sequences(layout, saved.block_ids, validate_rows=False)
    active = set(full.user_ids[np.unique(full.user[full.ts_ms >= day_ms(last_day)])].tolist())
    assert result["users"] == len(active) > 0 and result["version"] == saved.version
    new = {u: store.client.hget(store.keys.user_vector(u), "v") for u in full.user_ids}
    for u in before.user_ids:
        if u not in active:
            assert new[u] == old[u], u  # untouched
    changed = [u for u in active if new[u] != old.get(u)]
    assert len(changed) == len(active)  # new clicks move every active user's vector
    assert read_refresh_state(store)["until_ms"] == result["until_ms"]
    # Nothing new since the recorded state: nobody is rewritten.
    assert refresh_user_vectors(layout, store, settings, validate_rows=False)["users"] == 0


def test_cli_trains_writes_and_refreshes(
    tiny_world: Path,
    redis_base_settings: FeatureStoreSettings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # the default model folder is relative
    namespace = f"cli{np.random.default_rng().integers(1 << 30)}"
    if redis_base_settings.redis_url:
        monkeypatch.setenv("SMARTBLOCK_FEATURES__REDIS_URL", redis_base_settings.redis_url)
    else:
        monkeypatch.setenv("SMARTBLOCK_FEATURES__EMBEDDED_DIR", str(redis_base_settings.embedded_dir))
    monkeypatch.setenv("SMARTBLOCK_FEATURES__NAMESPACE", namespace)
    root = typer.Typer()
    ranking_cli.register(root)
    embeddings_cli.register(root)
    runner = CliRunner()
    args = ["train", "user-embeddings", "--world", str(tiny_world), "--epochs", "1", "--valid-days", "1"]
    out = runner.invoke(root, [*args, "--test-days", "1", "--json"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert set(metrics) == {"m3", "popular", "average", "multi"} and "recall@10" in metrics["m3"]
    assert json.loads((tmp_path / "worlds/models/m3/state.json").read_text())["current"].startswith("m3-")
    out = runner.invoke(root, ["embeddings", "refresh", "--world", str(tiny_world), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["users"] == 0  # trained on everything: nothing is newer
    settings = redis_base_settings.model_copy(update={"namespace": namespace})
    s = RedisFeatureStore.connect(settings)
    try:
        layout = DataLayout(tiny_world)
        seqs = build_sequences(layout, vocabulary(layout, validate_rows=False), validate_rows=False)
        user, block = str(seqs.user_ids[0]), str(seqs.block_ids[0])
        user_vec, mat, present = read_vectors(s, user, [block])
        assert user_vec is not None and present.all() and mat.shape == (1, 64)
    finally:
        s.clear()
