"""A file-based model registry: versions, validation against the current model, promotion, rollback.

Under the registry root, each model line (e.g. ``ranker``) is a ``data.artifacts.ArtifactStore``::

    <line>/versions/v0001/manifest.json, model.safetensors | model.txt, validation.json (after validate)
    <line>/state.json        {"current": "v0002", "history": ["v0001", "v0002"]}

``history`` lists promotions in order; ``rollback`` makes the previous entry current again. A version is
promoted only after ``validate`` compared it with the model current at that time on a holdout and found no
drop of the promotion metric beyond the tolerance (or with ``force``). ``validation.json`` is written after
the version and is not among its checksummed files.

Nothing loads a version in this process before it passed its checksums and a trial load in a child process
(``ranking.trial``): ``load``, ``validate`` and ``promote`` (even with ``force``) refuse a version that fails
either with ``ModelRefused``, so a model file that crashes native code kills a throwaway child, not the
caller. Listing never loads: a version whose manifest cannot be read is listed with ``broken`` set.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data.artifacts import VERSIONS, ArtifactStore, write_json_atomic
from ranking.base import Ranker, read_manifest
from ranking.dataset import ListwiseData
from ranking.errors import ModelFormatError, ModelRefused, PromotionRefused, RegistryError
from ranking.evaluate import evaluate_scores
from ranking.trial import cached_verdict, trial

log = logging.getLogger("smartblock.ranking")

VALIDATION = "validation.json"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ValidationReport:
    line: str
    candidate: str
    baseline: str | None  # the current version compared against; None when nothing is promoted yet
    metric: str
    candidate_value: float
    baseline_value: float | None
    delta: float | None  # candidate - baseline
    tolerance: float
    passed: bool
    holdout_lists: int
    validated_at: str


class ModelRegistry:
    """Versioned rankers under ``root``; see the module docstring for layout and rules."""

    def __init__(
        self,
        root: Path | str,
        tolerance: float = 0.005,
        metric: str = "ndcg@10",
        trial_timeout_s: float = 120.0,
    ) -> None:
        self.root = Path(root)
        self.tolerance = tolerance
        self.metric = metric
        self.trial_timeout_s = trial_timeout_s

    # Reading ---------------------------------------------------------------------------------------------

    def lines(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / VERSIONS).is_dir())

    def versions(self, line: str) -> list[str]:
        return self._store(line).versions()

    def current(self, line: str) -> str | None:
        return self._store(line).current()

    def history(self, line: str) -> list[str]:
        """The versions made current, oldest first (the last is current)."""
        return self._store(line).history()

    def describe(self, line: str) -> list[dict[str, Any]]:
        """One row per version: model type, when saved, metrics, validation outcome, whether current, and
        ``broken``: why it cannot be used (an unreadable manifest, or a trial this process saw fail), else
        None. One broken version never hides the others."""
        current = self.current(line)
        rows = []
        for v in self.versions(line):
            folder = self.path(line, v)
            row: dict[str, Any] = {"version": v, "model": None, "saved_at": None, "metrics": {}}
            row.update(validated=None, current=v == current, broken=None)
            try:
                manifest = read_manifest(folder)
                validation = self._validation(line, v)
            except (ModelFormatError, RegistryError) as exc:
                rows.append({**row, "broken": str(exc)})
                continue
            verdict = cached_verdict(folder)
            row.update(
                model=manifest["kind"],
                saved_at=manifest["created"],
                metrics=manifest["metadata"].get("metrics", {}),
                data_range=manifest["metadata"].get("data_range"),
                parent=manifest["metadata"].get("parent"),
                validated=None if validation is None else validation["passed"],
                broken=verdict.reason if verdict is not None and not verdict.ok else None,
            )
            rows.append(row)
        return rows

    def data_range(self, line: str, version: str) -> dict[str, Any]:
        """What a version's manifest records of its training data (world, signature, days); {} if nothing.

        Raises ``RegistryError`` for an unknown version, ``ModelFormatError`` for an unreadable manifest.
        """
        recorded = read_manifest(self.path(line, version))["metadata"].get("data_range")
        return recorded if isinstance(recorded, dict) else {}

    def path(self, line: str, version: str) -> Path:
        store = self._store(line)
        if not store.exists(version):
            known = ", ".join(store.versions()) or "none"
            raise RegistryError(f"model line '{line}' has no version '{version}' (known: {known})")
        return store.folder(version)

    def load(self, line: str, version: str | None = None) -> Ranker:
        """The given version, or the current one, after its trial (``ModelRefused`` if it fails)."""
        from ranking.models import load_ranker

        version = version or self.current(line)
        if version is None:
            raise RegistryError(f"model line '{line}' has no current model; promote a version first")
        self.trial(line, version)
        return load_ranker(self.path(line, version))

    def trial(self, line: str, version: str) -> None:
        """Check ``version``'s manifest and checksums here, then load it and score a few rows in a child
        process (once per content, see ``ranking.trial``); ``ModelRefused`` with the reason if either fails.
        """
        folder = self.path(line, version)
        try:
            read_manifest(folder, verified=True)  # JSON and hashing only: safe in this process
        except ModelFormatError as exc:
            log.warning("model %s/%s refused: %s", line, version, exc)
            raise ModelRefused(f"{line}/{version} refused: {exc}") from exc
        verdict = trial(folder, self.trial_timeout_s)
        if not verdict.ok:
            if not verdict.cached:  # one line per refused content, however often it is asked for
                log.warning("model %s/%s refused: %s", line, version, verdict.reason)
            raise ModelRefused(f"{line}/{version} refused: {verdict.reason}")

    # Writing ---------------------------------------------------------------------------------------------

    def register(self, ranker: Ranker, line: str, metadata: dict[str, Any] | None = None) -> str:
        """Save a fitted ranker as the next version of ``line`` (not promoted); returns the version."""
        return self._store(line, create=True).write(ranker.artifact(metadata))

    def validate(
        self, line: str, version: str, holdout: ListwiseData | Callable[[dict[str, Any]], ListwiseData]
    ) -> ValidationReport:
        """Compare ``version`` with the current model on ``holdout``; record and return the outcome.

        ``holdout`` may be a function of a model's manifest ``metadata``, for models whose inputs differ (e.g.
        with and without user features): it must then give the same lists, with the features that model reads.
        """
        candidate_dir = self.path(line, version)
        baseline = self.current(line)
        key = self.metric

        def measure(v: str) -> tuple[float, int]:
            data = holdout(read_manifest(self.path(line, v))["metadata"]) if callable(holdout) else holdout
            ks = (int(key.rpartition("@")[2]),) if "@" in key else ()
            return float(evaluate_scores(data, self.load(line, v).score(data), ks=ks)[key]), data.n_lists

        value, n_lists = measure(version)
        base_value = delta = None
        if baseline is not None and baseline != version:
            base_value, base_lists = measure(baseline)
            if base_lists != n_lists:
                raise RegistryError(
                    f"the holdout gave {n_lists} lists for {version}, {base_lists} for {baseline}"
                )
            delta = value - base_value
        report = ValidationReport(
            line=line,
            candidate=version,
            baseline=baseline if baseline != version else None,
            metric=key,
            candidate_value=round(value, 6),
            baseline_value=None if base_value is None else round(base_value, 6),
            delta=None if delta is None else round(delta, 6),
            tolerance=self.tolerance,
            passed=delta is None or delta >= -self.tolerance,
            holdout_lists=n_lists,
            validated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        write_json_atomic(candidate_dir / VALIDATION, asdict(report))
        return report

    def promote(self, line: str, version: str, force: bool = False) -> str:
        """Make ``version`` current; refused unless its validation passed against today's current model, and
        always unless it passes its trial (``force`` skips the metric comparison, never the trial)."""
        self.path(line, version)
        current = self.current(line)
        if current == version:
            raise RegistryError(f"{line}/{version} is already current")
        if not force:
            validation = self._validation(line, version)
            if validation is None:
                raise PromotionRefused(f"{line}/{version} was never validated: run `models validate` first")
            if validation["baseline"] != current:
                raise PromotionRefused(
                    f"{line}/{version} was validated against {validation['baseline']}, but the current "
                    f"model is now {current}: validate again"
                )
            if not validation["passed"]:
                raise PromotionRefused(
                    f"{line}/{version} regresses {validation['metric']} by {-validation['delta']:.4f} "
                    f"({validation['candidate_value']:.4f} vs {validation['baseline_value']:.4f}), "
                    f"beyond the tolerance {validation['tolerance']}"
                )
        self.trial(line, version)
        self._store(line).make_current(version)
        return version

    def rollback(self, line: str) -> str:
        """Make the previously promoted version current again; returns it."""
        version = self._store(line).rollback()
        if version is None:
            raise RegistryError(f"model line '{line}' has no earlier promoted version to roll back to")
        return version

    # Internals -------------------------------------------------------------------------------------------

    def _store(self, line: str, create: bool = False) -> ArtifactStore:
        if not _NAME.match(line):
            raise RegistryError(f"model line name '{line}' must use only letters, digits, '_' and '-'")
        folder = self.root / line
        if not create and not folder.is_dir():
            known = ", ".join(self.lines()) or "none"
            raise RegistryError(f"no model line '{line}' in {self.root} (known: {known})")
        return ArtifactStore(folder)

    def _validation(self, line: str, version: str) -> dict[str, Any] | None:
        path = self.path(line, version) / VALIDATION
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # cut short or edited by hand: say which file
            raise RegistryError(f"{path}: unreadable ({exc}); validate the version again") from None
