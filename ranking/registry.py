"""A file-based model registry: versions, validation against the current model, promotion, rollback.

Layout under the registry root, one folder per model line (e.g. ``ranker``)::

    <line>/versions/v0001/manifest.json, model.safetensors | model.txt, validation.json (after validate)
    <line>/state.json        {"current": "v0002", "history": ["v0001", "v0002"]}

``history`` lists promotions in order; ``rollback`` makes the previous entry current again. A version is
promoted only after ``validate`` compared it with the model current at that time on a holdout and found no
drop of the promotion metric beyond the tolerance (or with ``force``).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ranking.base import Ranker, read_manifest
from ranking.dataset import ListwiseData
from ranking.errors import PromotionRefused, RegistryError
from ranking.evaluate import evaluate_scores

STATE = "state.json"
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

    def __init__(self, root: Path | str, tolerance: float = 0.005, metric: str = "ndcg@10") -> None:
        self.root = Path(root)
        self.tolerance = tolerance
        self.metric = metric

    # Reading ---------------------------------------------------------------------------------------------

    def lines(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def versions(self, line: str) -> list[str]:
        folder = self._line_dir(line) / "versions"
        return (
            sorted(p.name for p in folder.iterdir() if (p / "manifest.json").is_file())
            if folder.is_dir()
            else []
        )

    def current(self, line: str) -> str | None:
        return self._state(line)["current"]

    def describe(self, line: str) -> list[dict[str, Any]]:
        """One row per version: model type, when saved, metrics, validation outcome, whether current."""
        current = self.current(line)
        rows = []
        for v in self.versions(line):
            folder = self.path(line, v)
            manifest = read_manifest(folder)
            validation = self._validation(line, v)
            rows.append(
                {
                    "version": v,
                    "model": manifest["model"],
                    "saved_at": manifest.get("saved_at"),
                    "metrics": manifest.get("metrics", {}),
                    "data_range": manifest.get("data_range"),
                    "parent": manifest.get("parent"),
                    "validated": None if validation is None else validation["passed"],
                    "current": v == current,
                }
            )
        return rows

    def path(self, line: str, version: str) -> Path:
        folder = self._line_dir(line) / "versions" / version
        if not (folder / "manifest.json").is_file():
            known = ", ".join(self.versions(line)) or "none"
            raise RegistryError(f"model line '{line}' has no version '{version}' (known: {known})")
        return folder

    def load(self, line: str, version: str | None = None) -> Ranker:
        """The given version, or the current one."""
        from ranking.models import load_ranker

        version = version or self.current(line)
        if version is None:
            raise RegistryError(f"model line '{line}' has no current model; promote a version first")
        return load_ranker(self.path(line, version))

    # Writing ---------------------------------------------------------------------------------------------

    def register(self, ranker: Ranker, line: str, metadata: dict[str, Any] | None = None) -> str:
        """Save a fitted ranker as the next version of ``line`` (not promoted); returns the version."""
        folder = self._line_dir(line, create=True) / "versions"
        existing = [int(v[1:]) for v in self.versions(line)]
        version = f"v{(max(existing) + 1 if existing else 1):04d}"
        ranker.save(folder / version, metadata=metadata)
        return version

    def validate(
        self, line: str, version: str, holdout: ListwiseData | Callable[[dict[str, Any]], ListwiseData]
    ) -> ValidationReport:
        """Compare ``version`` with the current model on ``holdout``; record and return the outcome.

        ``holdout`` may be a function of a model's manifest, for models whose inputs differ (e.g. with and
        without user features): it must then give the same lists, with the features that model reads.
        """
        candidate_dir = self.path(line, version)
        baseline = self.current(line)
        key = self.metric

        def measure(v: str) -> tuple[float, int]:
            data = holdout(read_manifest(self.path(line, v))) if callable(holdout) else holdout
            return float(evaluate_scores(data, self.load(line, v).score(data))[key]), data.n_lists

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
        _write_json(candidate_dir / VALIDATION, asdict(report))
        return report

    def promote(self, line: str, version: str, force: bool = False) -> str:
        """Make ``version`` current; refused unless its validation passed against today's current model."""
        self.path(line, version)
        state = self._state(line)
        if state["current"] == version:
            raise RegistryError(f"{line}/{version} is already current")
        if not force:
            validation = self._validation(line, version)
            if validation is None:
                raise PromotionRefused(f"{line}/{version} was never validated: run `models validate` first")
            if validation["baseline"] != state["current"]:
                raise PromotionRefused(
                    f"{line}/{version} was validated against {validation['baseline']}, but the current "
                    f"model is now {state['current']}: validate again"
                )
            if not validation["passed"]:
                raise PromotionRefused(
                    f"{line}/{version} regresses {validation['metric']} by {-validation['delta']:.4f} "
                    f"({validation['candidate_value']:.4f} vs {validation['baseline_value']:.4f}), "
                    f"beyond the tolerance {validation['tolerance']}"
                )
        state["current"] = version
        state["history"].append(version)
        self._write_state(line, state)
        return version

    def rollback(self, line: str) -> str:
        """Make the previously promoted version current again; returns it."""
        state = self._state(line)
        if len(state["history"]) < 2:
            raise RegistryError(f"model line '{line}' has no earlier promoted version to roll back to")
        state["history"].pop()
        state["current"] = state["history"][-1]
        self._write_state(line, state)
        return state["current"]

    # Internals -------------------------------------------------------------------------------------------

    def _line_dir(self, line: str, create: bool = False) -> Path:
        if not _NAME.match(line):
            raise RegistryError(f"model line name '{line}' must use only letters, digits, '_' and '-'")
        folder = self.root / line
        if create:
            (folder / "versions").mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            known = ", ".join(self.lines()) or "none"
            raise RegistryError(f"no model line '{line}' in {self.root} (known: {known})")
        return folder

    def _state(self, line: str) -> dict[str, Any]:
        path = self._line_dir(line) / STATE
        if not path.is_file():
            return {"current": None, "history": []}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(state.get("history"), list) or "current" not in state:
            raise RegistryError(f"{path} lacks 'current' or 'history'")
        return state

    def _write_state(self, line: str, state: dict[str, Any]) -> None:
        _write_json(self._line_dir(line) / STATE, state)

    def _validation(self, line: str, version: str) -> dict[str, Any] | None:
        path = self._line_dir(line) / "versions" / version / VALIDATION
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    # Write then rename, so a crash never leaves a half-written state file behind.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
