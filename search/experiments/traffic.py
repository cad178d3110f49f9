"""Closed-loop traffic: the simulated world's users search a running API over HTTP and click what it shows.

The world is rebuilt in memory from ``world.json`` (scale and seed; ``build_world`` is deterministic), so the
simulator knows every user's taste without reading ``truth/`` or anything of the server's. Each session
draws its user, taste and queries from the world's session model (``data.world.sessions``), POSTs each query
to ``/search``, scores the returned page with the world's click model (``data.world.clicks``: the same
functions that wrote the logged clicks) and POSTs the clicks and dwell times to ``/events``. The server's
bandit and real-time features therefore learn from live feedback, and an A/B split measured on the events
it logs is a measurement, with the true utility of the shown pages reported beside it as ground truth.

Random streams are keyed by (seed, session number), so the sessions and queries a run plays do not depend on
the concurrency; the clicks depend on what the server shows, which is the point.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from data.days import Progress
from data.errors import ConfigError, SmartblockError
from data.layout import DataLayout
from data.world.clicks import (
    click_probability,
    draw_clicks,
    dwell_ms,
    oracle_page_utility,
    page_relevance,
    pick_docs,
    realize,
    utility,
)
from data.world.generate import build_world
from data.world.scales import SCALES
from data.world.sessions import draw_queries, draw_sessions
from data.world.state import World
from serving.experiments.config import RETRIEVAL_ORDER

# Random stream purposes under one run seed: the user panel, a session's plan, a session's clicks.
_PANEL, _PLAN, _CLICKS = 0, 1, 2
GIVE_UP_AFTER = 10  # transport failures in a row of one worker end the run
EVENT_ATTEMPTS = 3  # sends of one /events batch answered 503 (the store away: nothing accepted)
MAX_RETRY_WAIT_S = 5.0  # the longest Retry-After honoured


class ApiUnreachable(SmartblockError):
    """The search API does not answer (or is not ready) at the given URL."""


@dataclass(frozen=True)
class TrafficOptions:
    url: str
    users: int = 100
    minutes: float = 1.0
    sessions: int | None = None  # stop after this many sessions even if time is left
    concurrency: int = 4
    seed: int = 0
    page_size: int | None = None  # k of /search; default: the click model's page (positions it examines)
    think_s: float = 0.0  # pause between a session's queries
    uniform_users: bool = False  # sessions spread evenly over the panel instead of by activity
    timeout_s: float = 30.0  # per HTTP request


def rebuild_world(root: Path | str) -> World:
    """Rebuild a generated world from its manifest (scale and seed), refusing folders it cannot rebuild."""
    layout = DataLayout(Path(root))
    if not layout.manifest.is_file():
        raise ConfigError(
            f"{layout.manifest} not found: --world must be a folder written by 'world generate'"
        )
    manifest = layout.read_manifest()
    if manifest.get("generator") != "smartblock.world" or manifest.get("scale") not in SCALES:
        raise ConfigError(
            f"{layout.manifest} is not a simulated world of a known scale; closed-loop traffic needs one"
        )
    world = build_world(SCALES[manifest["scale"]], int(manifest["seed"]))
    counts = manifest.get("counts", {})
    # A world generated from a changed preset would silently simulate other users than it served.
    if counts.get("blocks") != world.catalog.n_blocks or counts.get("users") != world.population.n_users:
        raise ConfigError(
            f"{layout.manifest}: rebuilding scale '{manifest['scale']}' seed {manifest['seed']} gives "
            f"{world.catalog.n_blocks} blocks and {world.population.n_users} users, the manifest says "
            f"{counts.get('blocks')} and {counts.get('users')}"
        )
    return world


def sample_panel(world: World, n: int, seed: int) -> np.ndarray:
    """``n`` distinct user indices, drawn by activity (the users who search most are the likeliest)."""
    pop = world.population
    if not 1 <= n <= pop.n_users:
        raise ConfigError(f"--users must be between 1 and {pop.n_users} (the world's users), got {n}")
    rng = np.random.default_rng([seed, _PANEL])
    return rng.choice(pop.n_users, size=n, replace=False, p=pop.activity)


@dataclass
class SessionPlan:
    """One session: its user, its taste, and the queries it will type (query keys and strings)."""

    user: int
    kind: np.ndarray  # (Q,) query kinds
    keys: np.ndarray  # (Q,) query keys (what each string means)
    strings: list[str]
    facet_taste: np.ndarray  # (F,)
    genre_taste: np.ndarray  # (G,)


def plan_session(world: World, panel: np.ndarray, weights: np.ndarray, seed: int, number: int) -> SessionPlan:
    """Session ``number`` of a run: a panel user (by ``weights``), then the world's session and query draw."""
    rng = np.random.default_rng([seed, _PLAN, number])
    user = int(panel[rng.choice(len(panel), p=weights)])
    sessions = draw_sessions(world, rng, np.array([user]))
    queries = draw_queries(world, rng, sessions)
    return SessionPlan(
        user=user,
        kind=queries.kind,
        keys=queries.key,
        strings=[world.queries.strings[s] for s in queries.string],
        facet_taste=sessions.facet_taste[0],
        genre_taste=sessions.genre_taste[0],
    )


@dataclass
class PageOutcome:
    utility: np.ndarray  # (P,) expected utility of each scored block for this session and query
    realized: np.ndarray  # (P,)
    p_click: np.ndarray  # (P,)
    clicked: np.ndarray  # (P,) bool


def score_page(
    world: World,
    facet_taste: np.ndarray,
    genre_taste: np.ndarray,
    key: int,
    blocks: np.ndarray,
    positions: np.ndarray,
    rng: np.random.Generator,
) -> PageOutcome:
    """The click model on one served page: ``blocks`` (world block indices) shown at 1-based ``positions``."""
    kind = world.queries.key_kind[[key]]
    rel = page_relevance(world, key, blocks)[None, :]
    expected = utility(world, blocks[None, :], rel, kind, facet_taste[None, :], genre_taste[None, :])
    cm = world.scale.click_model
    realized = realize(cm, expected, rng)
    p_click = click_probability(cm, realized, positions[None, :])
    clicked = draw_clicks(rng, p_click)
    return PageOutcome(expected[0], realized[0], p_click[0], clicked[0])


@dataclass
class _Arm:
    """Totals of one (experiment, variant) as the responses named it."""

    searches: int = 0
    clicks: int = 0
    clicked_searches: int = 0
    utility_at_k: float = 0.0
    oracle_at_k: float = 0.0  # the best k blocks of the catalogue for the same sessions and queries
    examined_utility: float = 0.0
    ranker_versions: set[str] = field(default_factory=set)


def post_events(
    client: httpx.Client, events: list[dict[str, Any]], attempts: int = EVENT_ATTEMPTS
) -> tuple[httpx.Response, int]:
    """POST a batch to /events as a well-behaved client does: a 503 accepted nothing (the store was away),
    so the same batch goes again after the answer's ``Retry-After`` (at most ``MAX_RETRY_WAIT_S``), up to
    ``attempts`` sends in all. Returns the last answer and how many times the batch was sent again.

    Give every event an ``event_id``: a write the server gave up on may still land once Redis resumes, and
    the id makes the resend count once."""
    response = client.post("/events", json={"events": events})
    retries = 0
    while response.status_code == 503 and retries < attempts - 1:
        try:
            wait_s = float(response.headers.get("Retry-After", "1"))
        except ValueError:  # an HTTP date: this server sends seconds
            wait_s = 1.0
        time.sleep(min(max(wait_s, 0.0), MAX_RETRY_WAIT_S) if math.isfinite(wait_s) else 1.0)
        response = client.post("/events", json={"events": events})
        retries += 1
    return response, retries


@dataclass
class _Tally:
    """One worker's counts; merged at the end so the workers never share a lock on the hot path."""

    sessions: int = 0
    searches: int = 0
    clicks: int = 0
    events_sent: int = 0
    events_rejected: int = 0
    events_retried: int = 0  # POST /events sent again after a 503
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    failing: int = 0  # transport failures in a row
    unknown_blocks: int = 0
    unknown_queries: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    arms: dict[tuple[str, str], _Arm] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    def merge(self, other: _Tally) -> None:
        for name in (
            "sessions",
            "searches",
            "clicks",
            "events_sent",
            "events_rejected",
            "events_retried",
            "errors",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unknown_blocks += other.unknown_blocks
        self.unknown_queries += other.unknown_queries
        self.error_samples.extend(other.error_samples[: max(0, 5 - len(self.error_samples))])
        self.latencies_ms.extend(other.latencies_ms)
        for key, arm in other.arms.items():
            mine = self.arms.setdefault(key, _Arm())
            mine.searches += arm.searches
            mine.clicks += arm.clicks
            mine.clicked_searches += arm.clicked_searches
            mine.utility_at_k += arm.utility_at_k
            mine.oracle_at_k += arm.oracle_at_k
            mine.examined_utility += arm.examined_utility
            mine.ranker_versions |= arm.ranker_versions


class ClosedLoop:
    """Plays sessions of a user panel against ``options.url`` until the time or session budget runs out."""

    def __init__(self, world: World, options: TrafficOptions) -> None:
        page = world.scale.page_size
        k = options.page_size or page
        if not 1 <= k <= page:
            # The click model examines positions 1..page only; a longer page would get no clicks below it.
            raise ConfigError(f"--page-size must be between 1 and {page} (the click model's page), got {k}")
        if options.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {options.concurrency}")
        if options.minutes <= 0 and not options.sessions:
            raise ConfigError("give --minutes > 0 or a --sessions cap")
        self.world, self.options, self.k = world, options, k
        self.panel = sample_panel(world, options.users, options.seed)
        activity = world.population.activity[self.panel]
        self.weights = (
            np.full(len(self.panel), 1 / len(self.panel))
            if options.uniform_users
            else activity / activity.sum()
        )
        self.block_index = {b: i for i, b in enumerate(world.block_ids)}
        book = world.queries
        self.key_of = {s: int(book.string_key[i]) for i, s in enumerate(book.strings)}
        # Session ids unique per run, so two runs against one server never merge their sessions.
        self.run_id = uuid.uuid4().hex[:8]
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or (self.options.sessions and self._next >= self.options.sessions):
                return None
            self._next += 1
            return self._next - 1

    def check(self, client: httpx.Client) -> None:
        """Fail fast with a clear message when nothing (or something unready) answers at the URL."""
        url = self.options.url
        try:
            ready = client.get("/readyz")
        except httpx.HTTPError as exc:
            raise ApiUnreachable(f"the search API at {url} does not answer: {exc}") from None
        if ready.status_code != 200:
            detail = ready.text[:300]
            raise ApiUnreachable(
                f"the search API at {url} is not ready (GET /readyz {ready.status_code}): {detail}"
            )

    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        opts = self.options
        report = progress or (lambda stage, done, total: None)
        with self._client() as probe:
            self.check(probe)
        budget_s = opts.minutes * 60 if opts.minutes > 0 else math.inf
        started = time.monotonic()
        self.deadline = started + budget_s
        tallies = [_Tally() for _ in range(opts.concurrency)]
        with ThreadPoolExecutor(max_workers=opts.concurrency, thread_name_prefix="traffic") as pool:
            futures = [pool.submit(self._worker, t) for t in tallies]
            total = int(budget_s) if math.isfinite(budget_s) else (opts.sessions or 0)
            try:
                while True:
                    done, pending = wait(futures, timeout=1.0, return_when=FIRST_EXCEPTION)
                    if math.isfinite(budget_s):
                        report("seconds", min(int(time.monotonic() - started), total), total)
                    else:
                        report("sessions", min(self._next, total), total)
                    if not pending or any(f.exception() for f in done):
                        break
            finally:
                # Also on Ctrl-C: the workers finish their current request and stop.
                self._stop.set()
            for f in futures:
                f.result()  # a bug in a worker surfaces here instead of vanishing
        elapsed = time.monotonic() - started
        tally = _Tally()
        for t in tallies:
            tally.merge(t)
        return self._summary(tally, elapsed)

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.options.url.rstrip("/"), timeout=self.options.timeout_s)

    def _worker(self, tally: _Tally) -> None:
        with self._client() as client:
            while time.monotonic() < self.deadline and (number := self._take()) is not None:
                self._play(client, number, tally)

    def _play(self, client: httpx.Client, number: int, tally: _Tally) -> None:
        world, opts = self.world, self.options
        plan = plan_session(world, self.panel, self.weights, opts.seed, number)
        rng = np.random.default_rng([opts.seed, _CLICKS, number])
        user_id = str(world.user_ids[plan.user])
        session_id = f"sim-{self.run_id}-{number:07d}"
        tally.sessions += 1
        for step, query in enumerate(plan.strings):
            if time.monotonic() >= self.deadline or self._stop.is_set():
                return
            if step and opts.think_s > 0:
                time.sleep(opts.think_s)
            body = {"query": query, "user_id": user_id, "session_id": session_id, "k": self.k}
            t0 = time.perf_counter()
            try:
                response = client.post("/search", json=body)
            except httpx.HTTPError as exc:
                tally.error(f"POST /search: {type(exc).__name__}: {exc}")
                tally.failing += 1
                if tally.failing >= GIVE_UP_AFTER:
                    # The server went away: stop the run instead of counting refusals until the deadline.
                    self._stop.set()
                continue
            tally.failing = 0
            tally.latencies_ms.append((time.perf_counter() - t0) * 1000)
            if not response.is_success:
                tally.error(f"POST /search {response.status_code}: {response.text[:200]}")
                continue
            self._react(client, plan, user_id, query, response.json(), rng, tally)

    def _react(
        self,
        client: httpx.Client,
        plan: SessionPlan,
        user_id: str,
        query: str,
        page: dict[str, Any],
        rng: np.random.Generator,
        tally: _Tally,
    ) -> None:
        """Score one served page with the click model and send its clicks and dwell times."""
        world = self.world
        tally.searches += 1
        arm = tally.arms.setdefault((page.get("experiment", "?"), page.get("variant", "?")), _Arm())
        arm.searches += 1
        if version := page.get("ranker_version"):
            arm.ranker_versions.add(version)
        shown = [(pos, b["block_id"]) for pos, b in enumerate(page.get("blocks", [])[: self.k], start=1)]
        known = [(pos, self.block_index[b]) for pos, b in shown if b in self.block_index]
        tally.unknown_blocks += len(shown) - len(known)
        # Queries are mapped back through the query book's strings: the key is what the string means.
        key = self.key_of.get(query)
        if key is None:
            tally.unknown_queries += 1
            return
        arm.oracle_at_k += oracle_page_utility(
            world, key, int(world.queries.key_kind[key]), plan.facet_taste, plan.genre_taste, self.k
        )
        if not known:
            return
        positions = np.array([p for p, _ in known])
        blocks = np.array([b for _, b in known])
        out = score_page(world, plan.facet_taste, plan.genre_taste, key, blocks, positions, rng)
        theta = np.asarray(world.scale.click_model.theta)
        # Utility@k: mean true utility over the k slots (unknown or missing blocks count 0).
        arm.utility_at_k += float(out.utility.sum()) / self.k
        # What a position-biased reader gets from the page: utility weighted by the chance to look at it.
        arm.examined_utility += float((theta[positions - 1] * out.utility).sum())
        hit = np.flatnonzero(out.clicked)
        if len(hit) == 0:
            return
        arm.clicks += len(hit)
        arm.clicked_searches += 1
        tally.clicks += len(hit)
        docs = pick_docs(world, blocks[hit], rng)
        dwell = dwell_ms(world.scale.click_model, out.realized[hit], rng)
        events: list[dict[str, Any]] = []
        for i, doc, ms in zip(hit, docs, dwell, strict=True):
            # No ts: the server stamps its receive time, so real-time features see the events as they happen.
            common = {
                "request_id": page["request_id"],
                "user_id": user_id,
                "block_id": str(world.block_ids[blocks[i]]),
                "doc_id": str(world.doc_ids[doc]),
                "position": int(positions[i]),
            }
            # Ids that say which event it is, so a resent batch (post_events) is counted once.
            event_id = f"{page['request_id']}:{int(positions[i])}"
            events.append({**common, "type": "click", "event_id": f"{event_id}:c"})
            events.append({**common, "type": "dwell", "dwell_ms": int(ms), "event_id": f"{event_id}:d"})
        try:
            response, retries = post_events(client, events)
        except httpx.HTTPError as exc:
            tally.error(f"POST /events: {type(exc).__name__}: {exc}")
            return
        tally.events_retried += retries
        if not response.is_success:
            tally.error(f"POST /events {response.status_code}: {response.text[:200]}")
            return
        tally.events_sent += len(events)
        rejected = int(response.json().get("rejected", 0))
        if rejected:
            tally.events_rejected += rejected
            tally.error(f"POST /events rejected {rejected}: {response.text[:200]}")

    def _summary(self, tally: _Tally, elapsed: float) -> dict[str, Any]:
        lat = np.array(tally.latencies_ms) if tally.latencies_ms else None
        variants = []
        for (experiment, variant), arm in sorted(tally.arms.items()):
            n = max(arm.searches, 1)
            variants.append(
                {
                    "experiment": experiment,
                    "variant": variant,
                    "ranker_versions": sorted(arm.ranker_versions),
                    "searches": arm.searches,
                    "clicks": arm.clicks,
                    "ctr": round(arm.clicks / n, 4),
                    "clicked_share": round(arm.clicked_searches / n, 4),
                    f"utility@{self.k}": round(arm.utility_at_k / n, 4),
                    "examined_utility": round(arm.examined_utility / n, 4),
                    "oracle_utility": round(arm.oracle_at_k / n, 4),
                    "oracle_share": round(arm.utility_at_k / arm.oracle_at_k, 4) if arm.oracle_at_k else None,
                }
            )
        _gain_captured(variants)
        return {
            "url": self.options.url,
            "run_id": self.run_id,
            "users": len(self.panel),
            "concurrency": self.options.concurrency,
            "page_size": self.k,
            "elapsed_s": round(elapsed, 2),
            "sessions": tally.sessions,
            "searches": tally.searches,
            "clicks": tally.clicks,
            "events_sent": tally.events_sent,
            "events_retried": tally.events_retried,
            "errors": tally.errors,
            "error_samples": tally.error_samples,
            "unknown_blocks": tally.unknown_blocks,
            "unknown_queries": tally.unknown_queries,
            "searches_per_s": round(tally.searches / elapsed, 2) if elapsed > 0 else 0.0,
            "search_latency_ms": {
                "p50": round(float(np.percentile(lat, 50)), 2) if lat is not None else None,
                "p99": round(float(np.percentile(lat, 99)), 2) if lat is not None else None,
            },
            "variants": variants,
        }


def _gain_captured(variants: list[dict[str, Any]]) -> None:
    """Each variant's gain captured against a retrieval-order variant of the same experiment, from their
    shares of the oracle (variants serve different sessions): (share - base) / (1 - base), else None."""
    base = {
        v["experiment"]: v["oracle_share"]
        for v in variants
        if v["ranker_versions"] == [RETRIEVAL_ORDER] and v["oracle_share"] is not None
    }
    for v in variants:
        b = base.get(v["experiment"])
        ok = b is not None and v["oracle_share"] is not None and b < 1
        v["gain_captured"] = round((v["oracle_share"] - b) / (1 - b), 4) if ok else None


def simulate_traffic(
    world_dir: Path | str, options: TrafficOptions, progress: Progress | None = None
) -> dict:
    """Rebuild the world in ``world_dir`` and play its users against the API at ``options.url``."""
    return ClosedLoop(rebuild_world(world_dir), options).run(progress)
