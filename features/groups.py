"""Feature groups: the features sharing a name prefix, switched on and off together (A/B variants, ablations).

A group that is off gives each of its features the declared default, the value a request has when the store
knows nothing, so a model sees an input it was trained to handle rather than a zero it never saw.
"""

from __future__ import annotations

import numpy as np

from features.definitions import FEATURES

# Groups whose value depends on who is searching; off = a non-personal ranking.
PERSONAL_GROUPS = ("user", "rt", "session", "m3")


def group_of(name: str) -> str:
    return name.split("_", 1)[0]


FEATURE_GROUPS: dict[str, tuple[str, ...]] = {}
for _f in FEATURES:
    FEATURE_GROUPS.setdefault(group_of(_f.name), ())
    FEATURE_GROUPS[group_of(_f.name)] += (_f.name,)
# Kept even before a group has features (m3 arrives with the user-embedding features).
for _g in PERSONAL_GROUPS:
    FEATURE_GROUPS.setdefault(_g, ())


def default_mask(off: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(columns, defaults): the FEATURES columns of the groups in ``off`` and the values they take."""
    unknown = off - set(FEATURE_GROUPS)
    if unknown:
        raise ValueError(f"unknown feature groups {sorted(unknown)} (known: {sorted(FEATURE_GROUPS)})")
    cols = [i for i, f in enumerate(FEATURES) if group_of(f.name) in off]
    return np.array(cols, dtype=np.int64), np.array([FEATURES[i].default for i in cols], dtype=np.float64)
