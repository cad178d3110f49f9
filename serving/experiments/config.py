"""The experiment config file: layers of experiments, each split into variants overriding pipeline settings.

One YAML file (``experiments/*.yaml``) is read by ``smartblock experiment validate``, by the server (which
reloads it when it changes) and by ``smartblock experiment analyze``; this module is its only definition.

Shape::

    holdback: {percent: 5, salt: hb-2026-11}       # users kept out of every experiment (optional)
    layers:
      - name: ranking                              # layers split users independently of each other
        salt: ranking-2026-11
        experiments:
          - name: ranker-ab
            traffic: 70                            # percent of the layer's users
            variants:
              - {name: control, weight: 34, settings: {ranker: retrieval-order}}
              - {name: lgbm, weight: 33, settings: {ranker: ranker}}
              - {name: dasalc, weight: 33, settings: {ranker: dasalc}}
          - name: ranker-interleave
            traffic: 30
            variants:
              - {name: lgbm-vs-dasalc, weight: 100, interleave: {a: ranker, b: dasalc}}

Rules checked here (each failure names where it is): weights of an experiment's variants sum to 100, the
traffic of a layer's experiments to at most 100; names are unique (layers, experiments over the whole file,
variants within their experiment); two layers may not override the same setting (a user is in one variant
of every layer, so both would apply); ranker names are well-formed. Whether a ranker exists is a question for
the model registry: ``check_rankers``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from data.errors import ConfigError

RETRIEVAL_ORDER = "retrieval-order"  # the built-in ranker: fused retrieval scores, no learned model
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
# A registry line, optionally pinned to a version ("dasalc@20261126T0412-ab12"), or the built-in.
RankerSpec = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(@[A-Za-z0-9_.:+-]+)?$")]
Percent = Annotated[float, Field(gt=0, le=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantSettings(_Strict):
    """What a variant may change in the search pipeline; unset fields keep the server's settings."""

    ranker: RankerSpec | None = Field(
        default=None,
        description=f"Registry line (or line@version) ranking the blocks, or '{RETRIEVAL_ORDER}'.",
    )
    personalized: bool | None = Field(
        default=None, description="false: user-dependent features take their defaults (non-personal ranking)."
    )
    feature_groups: dict[str, bool] | None = Field(
        default=None,
        description="Feature groups on/off (features.groups.FEATURE_GROUPS); off = the features' defaults.",
    )
    fusion_weights: dict[str, Annotated[float, Field(ge=0)]] | None = Field(
        default=None, description="Retrieval fusion weights per member; 0 mutes a member."
    )
    rerank_depth: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="How many of the best retrieval candidates the ranker re-orders."
    )
    exploration: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None,
        description="Epsilon: share of requests shown a uniformly random page of the top `exploration_pool` "
        "blocks; the logged propensities account for it, so these pages feed IPS estimates.",
    )
    exploration_pool: Annotated[int, Field(ge=2, le=200)] | None = None

    @field_validator("feature_groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, bool] | None) -> dict[str, bool] | None:
        from features.groups import FEATURE_GROUPS

        unknown = sorted(set(groups or {}) - set(FEATURE_GROUPS))
        if unknown:
            raise ValueError(f"unknown feature groups {unknown}; known: {sorted(FEATURE_GROUPS)}")
        return groups

    def overridden(self) -> set[str]:
        return {name for name in type(self).model_fields if getattr(self, name) is not None}

    def merged(self, other: VariantSettings) -> VariantSettings:
        """These settings with ``other``'s set fields on top."""
        return self.model_copy(update={k: getattr(other, k) for k in other.overridden()})

    def rankers(self) -> set[str]:
        return {self.ranker} if self.ranker else set()


class Interleave(_Strict):
    """Team-draft interleaving of two rankers in one list; a click counts for the ranker that placed it."""

    a: RankerSpec
    b: RankerSpec

    @model_validator(mode="after")
    def _two_rankers(self) -> Interleave:
        if self.a == self.b:
            raise ValueError(f"interleaving needs two different rankers, got '{self.a}' twice")
        return self


class Variant(_Strict):
    name: Name
    weight: Percent = Field(description="Percent of the experiment's users.")
    settings: VariantSettings = VariantSettings()
    interleave: Interleave | None = None

    @model_validator(mode="after")
    def _interleave_owns_ranker(self) -> Variant:
        if self.interleave is not None and self.settings.ranker is not None:
            raise ValueError("an interleaving variant takes its rankers from `interleave`, not `settings`")
        return self

    @property
    def kind(self) -> Literal["ab", "interleave"]:
        return "interleave" if self.interleave else "ab"

    def overridden(self) -> set[str]:
        # An interleaved page is built by the two rankers' draft, never explored: the variant owns both.
        owned = {"ranker", "exploration", "exploration_pool"} if self.interleave else set()
        return self.settings.overridden() | owned

    def rankers(self) -> set[str]:
        extra = {self.interleave.a, self.interleave.b} if self.interleave else set()
        return self.settings.rankers() | extra


class Experiment(_Strict):
    name: Name
    traffic: Percent = Field(description="Percent of the layer's users in this experiment.")
    variants: Annotated[list[Variant], Field(min_length=1)]
    control: Name | None = Field(
        default=None, description="Variant the others are compared with (default: the first one)."
    )

    @model_validator(mode="after")
    def _variants(self) -> Experiment:
        # Users outside every experiment log holdback/holdback or default/control: an experiment may not
        # pose as them (its rows would take in every unassigned user). Reading the world's logging-policy
        # pages as experiment "default" (variant "logging") stays possible.
        names = {v.name for v in self.variants}
        if self.name == "holdback" or (self.name == "default" and "control" in names):
            raise ValueError(f"experiment '{self.name}' would mix with users outside every experiment")
        _unique((v.name for v in self.variants), f"variant names of experiment '{self.name}'")
        total = sum(v.weight for v in self.variants)
        if abs(total - 100) > 1e-9:
            raise ValueError(f"the variant weights of experiment '{self.name}' sum to {total:g}, not 100")
        if self.control is not None and self.control not in {v.name for v in self.variants}:
            raise ValueError(f"control '{self.control}' is not a variant of experiment '{self.name}'")
        return self

    @property
    def control_variant(self) -> Variant:
        return next(v for v in self.variants if v.name == (self.control or self.variants[0].name))

    def overridden(self) -> set[str]:
        return set().union(*(v.overridden() for v in self.variants))


class Layer(_Strict):
    name: Name
    salt: Name = Field(description="Hash salt; a new salt reshuffles the layer's users.")
    experiments: list[Experiment] = []

    @model_validator(mode="after")
    def _traffic(self) -> Layer:
        total = sum(e.traffic for e in self.experiments)
        if total > 100 + 1e-9:
            raise ValueError(f"the experiments of layer '{self.name}' take {total:g}% of its users, over 100")
        return self

    def overridden(self) -> set[str]:
        return set().union(*(e.overridden() for e in self.experiments)) if self.experiments else set()


class Holdback(_Strict):
    percent: Annotated[float, Field(ge=0, lt=100)] = 0.0
    salt: Name = "holdback"


class ExperimentConfig(_Strict):
    holdback: Holdback = Holdback()
    layers: list[Layer] = []

    @field_validator("layers")
    @classmethod
    def _unique_names(cls, layers: list[Layer]) -> list[Layer]:
        _unique((layer.name for layer in layers), "layer names")
        _unique((layer.salt for layer in layers), "layer salts (layers sharing one are not independent)")
        _unique((e.name for layer in layers for e in layer.experiments), "experiment names")
        return layers

    @model_validator(mode="after")
    def _layers_disjoint(self) -> ExperimentConfig:
        owner: dict[str, str] = {}
        for layer in self.layers:
            for setting in sorted(layer.overridden()):
                if setting in owner:
                    raise ValueError(
                        f"layers '{owner[setting]}' and '{layer.name}' both override '{setting}': "
                        "a user is in both layers, so a setting belongs to one layer"
                    )
                owner[setting] = layer.name
        return self

    def experiments(self) -> list[Experiment]:
        return [e for layer in self.layers for e in layer.experiments]

    def experiment(self, name: str) -> Experiment:
        for e in self.experiments():
            if e.name == name:
                return e
        names = [e.name for e in self.experiments()]
        raise ConfigError(f"no experiment '{name}' in the config (it has {names})")

    def rankers(self) -> set[str]:
        return {r for e in self.experiments() for v in e.variants for r in v.rankers()}


def _unique(names: Iterable[str], what: str) -> None:
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        raise ValueError(f"{what} must be unique, repeated: {repeated}")


def _where(loc: tuple[int | str, ...], raw: object) -> str:
    """'layers[0] (ranking).experiments[1] (ab).variants[2].weight' from a pydantic error location."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                label += f" ({node['name']})"
            parts.append(label)
        else:
            node = node.get(item) if isinstance(node, dict) else None
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts) or "(top level)"


def parse_config(text: str, source: str = "<string>") -> ExperimentConfig:
    """Parse and check a whole config; raises ``ConfigError`` naming the file and every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"experiment config {source}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"experiment config {source}: expected a mapping at the top level")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"  {_where(tuple(err['loc']), raw)}: {msg}")
        raise ConfigError(f"experiment config {source} is invalid:\n" + "\n".join(problems)) from exc


def load_config(path: Path) -> tuple[ExperimentConfig, str]:
    """The parsed config and the text it came from (its digest tells the server whether it changed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"experiment config {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"experiment config {path}: not UTF-8 text (byte {exc.start})") from exc
    return parse_config(text, str(path)), text


_LINE = re.compile(r"^(?P<line>[A-Za-z0-9_-]+)(?:@(?P<version>.+))?$")


def split_ranker(spec: str) -> tuple[str, str | None]:
    """('dasalc', '2026...') from 'dasalc@2026...'; (line, None) for the line's current version."""
    found = _LINE.match(spec)
    if found is None:
        raise ConfigError(f"ranker '{spec}' is not 'line' or 'line@version'")
    return found["line"], found["version"]


def check_rankers(config: ExperimentConfig, lines: dict[str, tuple[list[str], str | None]]) -> list[str]:
    """Problems with the config's rankers given the registry's ``{line: (versions, current)}``; [] if none.

    A line must exist and have a promoted version, or the pinned version must exist: a variant whose
    ranker cannot load would otherwise fall back silently and measure something else.
    """
    problems = []
    for spec in sorted(config.rankers() - {RETRIEVAL_ORDER}):
        line, version = split_ranker(spec)
        if line not in lines:
            problems.append(f"unknown model '{spec}': the registry has lines {sorted(lines)}")
            continue
        versions, current = lines[line]
        if version is None and current is None:
            problems.append(f"model line '{line}' has no promoted version (smartblock models promote)")
        elif version is not None and version not in versions:
            problems.append(f"unknown model '{spec}': line '{line}' has no version '{version}'")
    return problems


class _Registry(Protocol):
    def lines(self) -> list[str]: ...
    def versions(self, line: str) -> list[str]: ...
    def current(self, line: str) -> str | None: ...


def registry_lines(registry: _Registry) -> dict[str, tuple[list[str], str | None]]:
    """``check_rankers``'s view of a registry (``ranking.registry.ModelRegistry``)."""
    return {line: (registry.versions(line), registry.current(line)) for line in registry.lines()}
