"""Which variant of every layer a user is in: deterministic, by hashing (salt, user_id).

A user's bucket in a layer is ``sha256(salt:user_id) mod 10,000``; the layer's experiments take consecutive
ranges of buckets by their traffic, and the variant inside an experiment comes from a second hash salted with
the experiment's name, so resizing one experiment does not reshuffle the variants of the users who stay in it.
Layers use different salts and so split users independently of each other. The holdback (its own salt) is
checked first: a held-back user is in no experiment and gets the server's settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from serving.experiments.config import ExperimentConfig, Interleave, VariantSettings

BUCKETS = 10_000
HOLDBACK = "holdback"
DEFAULT_EXPERIMENT, DEFAULT_VARIANT = "default", "control"  # what a user outside every experiment logs


def bucket(salt: str, user_id: str) -> int:
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass(frozen=True)
class Treatment:
    """What one request gets: its (experiment, variant) pairs, merged settings, and interleaving if any."""

    assignments: tuple[tuple[str, str], ...] = ()
    settings: VariantSettings = field(default_factory=VariantSettings)
    interleave: Interleave | None = None
    holdback: bool = False

    @property
    def experiment(self) -> str:
        if self.holdback:
            return HOLDBACK
        return ",".join(e for e, _ in self.assignments) or DEFAULT_EXPERIMENT

    @property
    def variant(self) -> str:
        if self.holdback:
            return HOLDBACK
        return ",".join(v for _, v in self.assignments) or DEFAULT_VARIANT


NO_TREATMENT = Treatment()


class Assigner:
    """Maps a user to a ``Treatment`` under one config; immutable, so it is swapped whole on reload."""

    def __init__(self, config: ExperimentConfig, digest: str = "") -> None:
        self.config = config
        self.digest = digest  # of the file's text: tells a reload whether anything changed

    def assign(self, user_id: str) -> Treatment:
        config = self.config
        hb = config.holdback
        if hb.percent > 0 and bucket(hb.salt, user_id) < hb.percent * BUCKETS / 100:
            return Treatment(holdback=True)
        pairs: list[tuple[str, str]] = []
        settings = VariantSettings()
        interleave: Interleave | None = None
        for layer in config.layers:
            b, start = bucket(layer.salt, user_id), 0.0
            for experiment in layer.experiments:
                end = start + experiment.traffic * BUCKETS / 100
                if start <= b < end:
                    v = bucket(f"{layer.salt}:{experiment.name}", user_id)
                    cum = 0.0
                    chosen = experiment.variants[-1]  # rounding of the weights' sum lands here
                    for variant in experiment.variants:
                        cum += variant.weight * BUCKETS / 100
                        if v < cum:
                            chosen = variant
                            break
                    pairs.append((experiment.name, chosen.name))
                    settings = settings.merged(chosen.settings)
                    interleave = chosen.interleave or interleave
                    break
                start = end
        return Treatment(tuple(pairs), settings, interleave)
