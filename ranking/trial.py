"""Trial-load a saved ranker in a child process before any long-lived process loads it.

A model file can pass its checksums and still kill the process that parses it: LightGBM aborts in native code
on a truncated ``model.txt`` whose manifest was written after the damage (a full disk during ``save``, a
copy tool that re-hashed what it copied), and a C++ ``abort`` or a segfault cannot be caught in Python. So
the first load of a version happens in a throwaway interpreter (``python -m ranking.trial FOLDER``) that
loads the ranker and scores a few rows of the shape its schema names; only a child that exits cleanly with
finite scores lets the parent load the model itself. A native crash then kills the child, not the server.

The verdict is cached per process by the version folder and the sha256 of its manifest (which holds the
sha256 of every file, checked by ``data.artifacts.verify`` on each in-process load): a trial runs once per
candidate, and a watcher polling a refused current version does not start a child every poll.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.artifacts import MANIFEST
from ranking.dataset import ListwiseData, Schema

TRIAL_ROWS = 8
# The package root this code was imported from: the child must run the same code, whatever its cwd.
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Verdict:
    """A trial's outcome: ``ok``, or the reason the version was refused."""

    ok: bool
    reason: str = ""
    seconds: float = 0.0
    cached: bool = False


_verdicts: dict[tuple[str, str], Verdict] = {}
# One trial at a time per process: the admin API and the registry watcher may ask for the same candidate at
# once, and one child per candidate is the point of the cache.
_lock = threading.Lock()


def manifest_digest(folder: Path) -> str | None:
    """sha256 of the version's manifest bytes (None when unreadable): with the files' own checksums inside,
    it names the exact content a verdict was reached on."""
    try:
        return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


def cached_verdict(folder: Path) -> Verdict | None:
    """The verdict already reached on this content in this process, without starting a trial."""
    digest = manifest_digest(folder)
    return None if digest is None else _verdicts.get((str(folder.resolve()), digest))


def trial(folder: Path, timeout_s: float) -> Verdict:
    """Load the ranker saved in ``folder`` and score a few rows in a child process; cached per content.

    Args:
        folder: a version folder (manifest checked by the caller).
        timeout_s: a child still running after this is killed and the version refused.
    """
    folder = Path(folder)
    digest = manifest_digest(folder)
    key = (str(folder.resolve()), digest or "")
    with _lock:
        have = _verdicts.get(key)
        if have is not None:
            return Verdict(have.ok, have.reason, have.seconds, cached=True)
        verdict = _run_child(folder, timeout_s)
        if digest is not None:
            _verdicts[key] = verdict
    return verdict


def _run_child(folder: Path, timeout_s: float) -> Verdict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SOURCE_ROOT), env.get("PYTHONPATH", "")) if p)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ranking.trial", str(folder)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Verdict(False, f"the trial load did not finish within {timeout_s:g} s", timeout_s)
    except OSError as exc:  # no interpreter to start: refuse rather than load untried
        return Verdict(False, f"the trial process could not start ({exc})", 0.0)
    seconds = round(time.monotonic() - started, 3)
    result = _last_json_line(proc.stdout)
    if proc.returncode == 0 and result.get("ok") is True:
        return Verdict(True, "", seconds)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        tail = _tail(proc.stderr)
        reason = f"the trial process died of {name} while loading or scoring it (a native crash)"
        return Verdict(False, f"{reason}: {tail}" if tail else reason, seconds)
    error = result.get("error") or _tail(proc.stderr) or f"exit status {proc.returncode}"
    return Verdict(False, f"the trial load failed: {error}", seconds)


def _last_json_line(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _tail(text: str, lines: int = 3) -> str:
    """The last distinct lines of a child's stderr: native code repeats its fatal message per thread."""
    kept = list(dict.fromkeys(line.strip() for line in text.strip().splitlines() if line.strip()))
    return " | ".join(kept[-lines:])[-400:]


# The child --------------------------------------------------------------------------------------------


def trial_rows(schema: Schema, n: int = TRIAL_ROWS) -> ListwiseData:
    """One list of ``n`` rows in the layout ``schema`` names (seeded noise, ids within each cardinality)."""
    rng = np.random.default_rng(0)
    cats = None
    if schema.cardinalities:
        cats = np.stack([rng.integers(0, max(c, 1), size=n) for c in schema.cardinalities], axis=1)
    return ListwiseData(
        dense=rng.normal(size=(n, len(schema.feature_names))),
        labels=np.zeros(n, np.float32),
        offsets=np.array([0, n]),
        feature_names=schema.feature_names,
        categorical=cats,
        cardinalities=schema.cardinalities,
        categorical_names=schema.categorical_names,
        vectors={name: rng.normal(size=(n, dim)) for name, dim in schema.vector_dims},
    )


def _child(folder: Path) -> dict:
    from ranking.base import read_manifest

    kind = read_manifest(folder)["kind"]
    if kind == "lgbm":  # the served default: LightGBM alone starts in 0.3 s, the catalogue (torch) in 2 s
        from ranking.lgbm import LightGBMRanker

        ranker = LightGBMRanker.load(folder)
    else:
        from ranking.models import load_ranker

        ranker = load_ranker(folder)
    scores = np.asarray(ranker.score(trial_rows(ranker.schema_)), dtype=np.float64)
    if scores.shape != (TRIAL_ROWS,):
        raise ValueError(f"{TRIAL_ROWS} rows gave scores of shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("the scores of the trial rows are not all finite")
    return {"ok": True, "rows": TRIAL_ROWS}


def main(argv: list[str]) -> int:
    try:
        result = _child(Path(argv[0]))
    except Exception as exc:  # report any Python-level failure as a reason; native ones end the process
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
