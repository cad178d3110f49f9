"""What the person gets: rankers judged on every candidate /search orders, against the world's truth.

Sessions are planned by the world's session model (``traffic.plan_session``: a panel of users, their
session tastes and queries). Each query goes through the serving pipeline in-process
(``SearchPipeline.gather_candidates``: the same retrieval, feature assembly and store as /search) to
retrieval's top ``depth`` candidates with their feature rows; every system then orders those same
candidates, and each
order is scored with the simulator's expected utility of each block for that session (``clicks.utility``,
what ``score_page`` uses). Truth is read here only.

Systems: ``retrieval`` (the fused order), each model over all candidates and re-ordering only retrieval's
top ``rerank`` (the serving cascade), and the reference rows ``oracle`` (the candidates sorted by true
utility), ``nonpersonal-oracle`` (sorted by the utility under the population's average taste: the best
order without knowing the person) and ``longterm-oracle`` (under the user's long-term taste: the best order
that knows the person but not what this session is after). The session then goes on as it would on the
site: the driver system's page is logged as an impression, the click model draws clicks on it, both go
through the event stream and the stream consumer into the store, so in-session features see the session's
earlier queries and clicks.
All systems are judged on the same requests (a paired comparison).

Per query: utility@k (mean true utility of the k slots), examined utility (sum of theta_k x utility, what a
position-biased reader gets), NDCG@k with the utility as gain against the best order of the candidates.
``gain_captured`` = (system - retrieval) / (oracle - retrieval) on the means. Confidence intervals resample
sessions (the unit the session model draws), overall and by query click-entropy bucket and query kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data.contracts import Interaction, InteractionType, SearchImpression, ShownBlock
from data.days import Progress
from data.errors import ConfigError
from data.world.clicks import dwell_ms, nonpersonal_utility, page_relevance, utility
from data.world.queries import KIND_NAMES
from data.world.sessions import ACTIVE_HOURS_S, MEAN_QUERIES_PER_SESSION, query_gaps_s
from data.world.state import World
from features.stream import StreamConsumer
from ranking.registry import ModelRegistry
from search.experiments.traffic import SessionPlan, plan_session, sample_panel, score_page
from serving.pipeline import Candidates, SearchPipeline

if TYPE_CHECKING:
    from search.settings import Settings

REFERENCES = ("retrieval", "oracle", "nonpersonal-oracle", "longterm-oracle")
_CLICKS = 7  # random stream of this evaluation's clicks (apart from the traffic run's streams)
_TIMES = 8  # random stream of the gaps between a session's queries

# Scores of one request's candidates (rows in NAMES order) -> (n,) scores.
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CandidateEvalOptions:
    users: int = 1000
    queries: int = 1500
    seed: int = 0
    depth: int = 100  # candidates retrieved and scored per query
    rerank: int = 16  # the cascade: each model also re-orders only retrieval's top `rerank`
    page: int = 8
    bootstrap: int = 500
    driver: str | None = None  # the system whose pages the sessions see; default: the first model


@dataclass
class _Log:
    """Per query, per system: utility@k, examined utility, NDCG@k; plus the query's segments."""

    systems: list[str]
    utility: list[list[float]] = field(default_factory=list)
    examined: list[list[float]] = field(default_factory=list)
    ndcg: list[list[float]] = field(default_factory=list)
    session: list[int] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    entropy: list[str] = field(default_factory=list)
    step: list[str] = field(default_factory=list)  # "first" query of its session, or "later"
    top_outside_rerank: list[int] = field(default_factory=list)  # oracle top-k blocks below rank `rerank`


def evaluate_candidates(
    pipeline: SearchPipeline,
    consumer: StreamConsumer,
    world: World,
    models: Mapping[str, Scorer],
    entropy_bucket: Callable[[str], str],
    options: CandidateEvalOptions = CandidateEvalOptions(),
    progress: Progress | None = None,
    day: date | None = None,
) -> dict[str, Any]:
    """Play ``options.queries`` planned queries through ``pipeline`` and score every system on them.

    ``day``: the requests happen on that day of the world's timeline (the day after its logs), sessions
    spread evenly over the active hours in play order and queries the session model's gaps apart, so time
    decays (recent interest, a session's tallies) see the spacing that training saw. None: the wall clock,
    every query a moment after the last, months after the logs' events.
    """
    report = progress or (lambda stage, done, total: None)
    systems = ["retrieval"]
    for name in models:
        systems += [name, f"{name}@{options.rerank}"]
    systems += [f"oracle@{options.rerank}", "nonpersonal-oracle", "longterm-oracle", "oracle"]
    driver = options.driver or (next(iter(models)) if models else "retrieval")
    if driver not in systems:
        raise ValueError(f"driver '{driver}' is not one of the systems {systems}")
    log = _Log(systems)
    panel = sample_panel(world, options.users, options.seed)
    weights = world.population.activity[panel] / world.population.activity[panel].sum()
    block_index = {str(b): i for i, b in enumerate(world.block_ids)}
    theta = np.asarray(world.scale.click_model.theta)
    consumer.ensure_group()
    number = 0
    times: list[datetime] = []
    while len(log.session) < options.queries:
        plan = plan_session(world, panel, weights, options.seed, number)
        rng = np.random.default_rng([options.seed, _CLICKS, number])
        user_id = str(world.user_ids[plan.user])
        times = _query_times(day, number, len(plan.strings), options, after=times[-1] if times else None)
        for step, (query, key, kind) in enumerate(zip(plan.strings, plan.keys, plan.kind, strict=True)):
            if len(log.session) >= options.queries:
                break
            cand = pipeline.gather_candidates(
                query,
                user_id,
                options.depth,
                _session_id(number),
                now=times[step] if times else None,
                request_id=_request_id(options.seed, number, step),
            )
            if not cand.hits:
                continue
            blocks = np.array([block_index[h.id] for h in cand.hits])
            rel = page_relevance(world, int(key), blocks)[None, :]
            kinds = np.array([kind])
            true = utility(
                world, blocks[None, :], rel, kinds, plan.facet_taste[None], plan.genre_taste[None]
            )[0]
            average = nonpersonal_utility(world, blocks[None, :], rel, kinds)[0]
            domain = world.catalog.entity_domain[world.queries.key_entity[int(key)]]
            longterm = utility(
                world,
                blocks[None, :],
                rel,
                kinds,
                world.population.facet_pref[plan.user, domain][None],
                world.population.genre_pref[plan.user][None],
            )[0]
            orders = _orders(cand, models, true, average, longterm, options.rerank)
            _record(log, orders, true, theta, options.page)
            log.session.append(number)
            log.kind.append(KIND_NAMES[int(kind)])
            log.entropy.append(entropy_bucket(cand.query))
            log.step.append("first" if step == 0 else "later")
            best = np.argsort(-true, kind="stable")[: options.page]
            log.top_outside_rerank.append(int((best >= options.rerank).sum()))
            page = orders[driver][: options.page]
            _feed_back(pipeline, consumer, world, plan, cand, user_id, number, int(key), blocks, page, rng)
            report("queries", len(log.session), options.queries)
        number += 1
    return _summary(log, options, driver, number)


def _query_times(
    day: date | None, number: int, n: int, options: CandidateEvalOptions, after: datetime | None = None
) -> list[datetime]:
    """When session ``number``'s ``n`` queries happen on ``day`` (none without a day: the wall clock).

    Sessions start in play order, evenly over the active hours for the expected number of sessions, and
    not before the previous session's last query (``after``): the store never holds a request's future.
    """
    if day is None:
        return []
    first, last = ACTIVE_HOURS_S
    spacing = (last - first) / max(1.0, options.queries / MEAN_QUERIES_PER_SESSION)
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    start = midnight + timedelta(seconds=first + number * spacing)
    if after is not None:
        start = max(start, after + timedelta(seconds=1))
    rng = np.random.default_rng([options.seed, _TIMES, number])
    return [start + timedelta(seconds=float(s)) for s in np.cumsum(query_gaps_s(rng, np.arange(n)))]


def _session_id(number: int) -> str:
    return f"eval-{number:07d}"


def _request_id(seed: int, number: int, step: int) -> str:
    """Named, not random: the id seeds the request's Thompson draw (a ranker input), so a rerun of the same
    evaluation scores the same rows. Random ids made the same model's gain captured move by up to 0.02 on a
    query kind between two runs of the same code, since every later page, click and feature followed."""
    return f"eval-s{seed}-{number:07d}-{step}"


def _orders(
    cand: Candidates,
    models: Mapping[str, Scorer],
    true: np.ndarray,
    average: np.ndarray,
    longterm: np.ndarray,
    rerank: int,
) -> dict[str, np.ndarray]:
    n = len(cand.hits)
    retrieval = np.arange(n)
    out = {"retrieval": retrieval}
    for name, scorer in models.items():
        scores = np.asarray(scorer(cand.rows), dtype=np.float64)
        out[name] = np.argsort(-scores, kind="stable")
        head = min(rerank, n)
        out[f"{name}@{rerank}"] = np.concatenate(
            [np.argsort(-scores[:head], kind="stable"), retrieval[head:]]
        )
    head = min(rerank, n)
    out[f"oracle@{rerank}"] = np.concatenate([np.argsort(-true[:head], kind="stable"), retrieval[head:]])
    out["nonpersonal-oracle"] = np.argsort(-average, kind="stable")
    out["longterm-oracle"] = np.argsort(-longterm, kind="stable")
    out["oracle"] = np.argsort(-true, kind="stable")
    return out


def _record(log: _Log, orders: dict[str, np.ndarray], true: np.ndarray, theta: np.ndarray, k: int) -> None:
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = float(np.sort(true)[::-1][:k] @ discount[: min(k, len(true))])
    utility_row, examined_row, ndcg_row = [], [], []
    for name in log.systems:
        top = true[orders[name][:k]]
        utility_row.append(float(top.sum()) / k)  # missing slots count 0
        examined_row.append(float(top @ theta[: len(top)]))
        ndcg_row.append(float(top @ discount[: len(top)]) / ideal if ideal > 0 else 0.0)
    log.utility.append(utility_row)
    log.examined.append(examined_row)
    log.ndcg.append(ndcg_row)


def _feed_back(
    pipeline: SearchPipeline,
    consumer: StreamConsumer,
    world: World,
    plan: SessionPlan,
    cand: Candidates,
    user_id: str,
    number: int,
    key: int,
    blocks: np.ndarray,
    page: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Log the driver's page and the clicks the click model draws on it, through the stream, as /search
    and /events would, and let the consumer apply them before the session's next query."""
    shown = blocks[page]
    positions = np.arange(1, len(page) + 1)
    outcome = score_page(world, plan.facet_taste, plan.genre_taste, key, shown, positions, rng)
    session_id = _session_id(number)
    records: list[SearchImpression | Interaction] = [
        SearchImpression(
            request_id=cand.request_id,
            ts=cand.ts,
            user_id=user_id,
            session_id=session_id,
            query=cand.query,
            shown=[
                ShownBlock(block_id=cand.hits[i].id, position=p, propensity=1.0)
                for i, p in zip(page, positions, strict=True)
            ],
            n_candidates=len(cand.hits),
            experiment="candidate-eval",
            variant="driver",
            ranker_version="candidate-eval",
        )
    ]
    hit = np.flatnonzero(outcome.clicked)
    # The click model's own dwell times, as the traffic simulator sends them.
    dwell = dwell_ms(world.scale.click_model, outcome.realized[hit], rng)
    for j, ms in zip(hit, dwell, strict=True):
        common = {
            "request_id": cand.request_id,
            "ts": cand.ts,
            "user_id": user_id,
            "block_id": cand.hits[page[j]].id,
            "position": int(positions[j]),
        }
        records.append(Interaction(**common, type=InteractionType.CLICK))
        records.append(Interaction(**common, type=InteractionType.DWELL, dwell_ms=int(ms)))
    pipeline.store.publish(records)
    consumer.run(until_idle=True)


def _summary(log: _Log, options: CandidateEvalOptions, driver: str, sessions: int) -> dict[str, Any]:
    utility = np.array(log.utility)
    examined = np.array(log.examined)
    ndcg = np.array(log.ndcg)
    session = np.array(log.session)
    rng = np.random.default_rng([options.seed, 99])
    segments: dict[str, dict[str, np.ndarray]] = {
        "by_entropy": {b: np.array(log.entropy) == b for b in sorted(set(log.entropy))},
        "by_kind": {k: np.array(log.kind) == k for k in KIND_NAMES if k in set(log.kind)},
        # The first query of a session has only long-term and earlier sessions' evidence to go on.
        "by_step": {k: np.array(log.step) == k for k in ("first", "later") if k in set(log.step)},
    }
    out: dict[str, Any] = {
        "queries": len(session),
        "sessions": len(np.unique(session)),
        "depth": options.depth,
        "rerank": options.rerank,
        "page": options.page,
        "driver": driver,
        "oracle_top_below_rerank": round(float(np.mean(log.top_outside_rerank)), 3),
        "queries_with_oracle_top_below_rerank": round(
            float(np.mean(np.array(log.top_outside_rerank) > 0)), 4
        ),
        "overall": _table(
            log.systems, utility, examined, ndcg, session, np.ones(len(session), bool), rng, options
        ),
    }
    for name, groups in segments.items():
        out[name] = {
            g: _table(log.systems, utility, examined, ndcg, session, mask, rng, options)
            for g, mask in groups.items()
        }
    return out


def _table(
    systems: list[str],
    utility: np.ndarray,
    examined: np.ndarray,
    ndcg: np.ndarray,
    session: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    options: CandidateEvalOptions,
) -> dict[str, Any]:
    """Per system: means with session-bootstrap 95% CIs, and gain captured with its CI."""
    u, e, g, s = utility[mask], examined[mask], ndcg[mask], session[mask]
    if not len(s):
        return {}
    ids, inverse = np.unique(s, return_inverse=True)
    # Per-session sums, resampled: a bootstrap of sessions (queries of a session are not independent).
    sums = {name: np.zeros((len(ids), u.shape[1])) for name in ("u", "e", "g")}
    counts = np.bincount(inverse, minlength=len(ids)).astype(float)
    for name, values in (("u", u), ("e", e), ("g", g)):
        np.add.at(sums[name], inverse, values)
    draws = rng.integers(0, len(ids), size=(options.bootstrap, len(ids)))
    weights = np.stack([np.bincount(d, minlength=len(ids)) for d in draws]).astype(float)  # (B, S)
    total = weights @ counts  # (B,)
    boot = {name: (weights @ sums[name]) / total[:, None] for name in sums}  # (B, systems)
    col = {name: i for i, name in enumerate(systems)}
    ret, orc = col["retrieval"], col["oracle"]

    def gain(values: np.ndarray) -> np.ndarray:
        span = values[..., orc] - values[..., ret]
        return np.divide(
            values - values[..., ret : ret + 1],
            span[..., None],
            out=np.zeros_like(values),
            where=span[..., None] != 0,
        )

    point = {"u": u.mean(axis=0), "e": e.mean(axis=0), "g": g.mean(axis=0)}
    gains, gains_boot = gain(point["u"][None, :])[0], gain(boot["u"])
    table: dict[str, Any] = {"queries": len(s), "sessions": len(ids), "systems": {}}
    for name, i in col.items():
        table["systems"][name] = {
            f"utility@{options.page}": _ci(point["u"][i], boot["u"][:, i]),
            "examined_utility": _ci(point["e"][i], boot["e"][:, i]),
            f"ndcg@{options.page}": _ci(point["g"][i], boot["g"][:, i]),
            "gain_captured": _ci(gains[i], gains_boot[:, i]),
        }
    return table


def _ci(point: float, draws: np.ndarray) -> dict[str, float]:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"mean": round(float(point), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def run_candidate_eval(
    settings: Settings,
    world_dir: Path,
    specs: list[str],
    options: CandidateEvalOptions = CandidateEvalOptions(),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The evaluation on a world set up by quickstart (indexes built; models in the registry).

    ``specs`` name registry lines (their current version, else their newest) or ``line@version``; the
    reference rows are always reported. The store is a scratch namespace rebuilt from the world's logs (as
    ``features build`` does) and cleared afterwards, so the sessions played here change nothing served.
    """
    from data.layout import DataLayout
    from features.build import build_online_features
    from features.store import RedisFeatureStore
    from ranking.world import Slicer
    from search.experiments.traffic import rebuild_world
    from serving.metrics import Metrics
    from serving.ranker import ServedModel
    from serving.runtime import load_parts
    from serving.store import GuardedStore

    registry = ModelRegistry(settings.ranking.registry_dir)
    models: dict[str, Scorer] = {}
    for spec in specs:
        line, _, version = spec.partition("@")
        if line not in registry.lines():
            raise ConfigError(
                f"no model line '{line}' in {settings.ranking.registry_dir} (lines: {registry.lines()})"
            )
        version = version or registry.current(line) or registry.versions(line)[-1]
        models[spec] = ServedModel.from_registry(
            registry, line, version, threads=settings.serving.torch_threads
        ).score
    world = rebuild_world(world_dir)
    layout = DataLayout(world_dir)
    parts = load_parts(settings, world_dir)
    scratch = settings.features.model_copy(update={"namespace": f"{settings.features.namespace}-eval"})
    store = RedisFeatureStore.connect(scratch)
    build_online_features(layout, store, progress=progress)
    if settings.embeddings.as_of:
        from features.embeddings.pipeline import write_current_vectors

        write_current_vectors(layout, store, settings.embeddings)
    serving = settings.serving.model_copy(update={"experiments_file": None})
    pipeline = SearchPipeline(
        parts.retriever,
        parts.catalog,
        GuardedStore(store, serving.breaker_cooldown_s),
        registry,
        serving,
        Metrics(),
        candidates=max(options.depth, settings.retrieval.candidates),
    )
    last_day = layout.days("impressions")[-1]
    slicer = Slicer.from_logs(layout, last_day + timedelta(days=1), settings.ranking.world.entropy_min_clicks)
    consumer = StreamConsumer(store, scratch, consumer="candidate-eval")
    try:
        result = evaluate_candidates(
            pipeline,
            consumer,
            world,
            models,
            lambda q: str(slicer.entropy_buckets(np.array([q]))[0]),
            options,
            progress,
            day=last_day + timedelta(days=1),
        )
    finally:
        store.clear()
    return result
