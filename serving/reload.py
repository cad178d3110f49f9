"""What the search path ranks with, and how a promotion or a new experiment file replaces it.

The served state is one immutable ``Served`` held in an attribute; a promotion, rollback or experiment-file
change loads the new parts beside it and swaps the reference (an atomic store in CPython), so a request in
flight finishes on the state it started with and none is dropped or blocked. Reloads are serialised by a
lock that searches never take.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from data.errors import ConfigError, ModelFormatError
from ranking.errors import ModelRefused, RankingError, RegistryError
from ranking.registry import ModelRegistry
from serving.config import ServingSettings
from serving.errors import ServingError
from serving.experiments.assignment import Assigner
from serving.experiments.config import RETRIEVAL_ORDER, ExperimentConfig, load_config, split_ranker
from serving.ranker import ServedModel

log = logging.getLogger("smartblock.serving")


def _name(model: ServedModel | None) -> str:
    return f"{model.line}/{model.version}" if model else "retrieval order"


@dataclass(frozen=True)
class Served:
    """Everything a request ranks with, swapped as one reference: a request never pairs a new config with
    the rankers of the old one."""

    model: ServedModel | None = None  # the served line's current version: everyone's default
    model_error: str | None = None
    # The line's current version when it was refused (trial or load failed), and what serves instead.
    refused_version: str | None = None
    degraded: str | None = None
    # Rankers the experiments name (registry line or line@version) besides the default.
    models: dict[str, ServedModel] = field(default_factory=dict)
    assigner: Assigner = field(default_factory=lambda: Assigner(ExperimentConfig()))


class ServedState:
    """Holds the current ``Served`` and replaces it on reload; ``current`` is what a request snapshots.

    ``fusion_members`` are the served retriever's member names: an experiment may only weight those.
    """

    def __init__(
        self, registry: ModelRegistry, settings: ServingSettings, fusion_members: Iterable[str] = ()
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.fusion_members = frozenset(fusion_members)
        self.current = Served()
        self._lock = threading.Lock()

    def reload_model(self) -> ServedModel | None:
        """Load the line's current version (if it changed) and swap it in; returns what is now served.

        A current version that fails its trial or its load (``ServedModel.from_registry``) is refused: the
        served model stays, or, with nothing served yet (start-up), the last version of the line's history
        that loads is served instead (else retrieval order); ``refused_version`` and ``degraded`` say so
        until another version becomes current. A refused version is not retried while it stays current.

        The experiments' rankers that follow a line's current version are refreshed in the same swap; one
        that fails to load keeps its loaded version (logged), so a broken experiment line never blocks the
        default's promotion.
        """
        with self._lock:
            served = self.current
            model, error, refused, degraded = served.model, None, None, None
            line = self.settings.model_line
            try:
                current = self.registry.current(line)
            except RegistryError as exc:  # no such line yet: serve retrieval order until one is promoted
                model, error = None, str(exc)
            except ModelFormatError as exc:  # an unreadable state.json: keep what serves, say why
                error, refused, degraded = str(exc), served.refused_version, served.degraded
                if served.model_error != error:
                    log.warning("model registry unreadable, keeping %s: %s", _name(model), exc)
            else:
                if current is None:
                    model, error = None, f"model line '{line}' has no promoted version"
                elif current == served.refused_version:  # refused before: the same files, the same answer
                    error, refused, degraded = served.model_error, current, served.degraded
                elif model is None or model.version != current:
                    try:
                        model = ServedModel.from_registry(
                            self.registry, line, current, threads=self.settings.torch_threads
                        )
                    except (RankingError, ModelFormatError, ServingError, OSError) as exc:
                        if not isinstance(exc, ModelRefused):  # the registry logged its refusals
                            log.warning("model %s/%s cannot be served: %s", line, current, exc)
                        model, error, degraded = self._refused(line, current, model, str(exc))
                        refused = current
            try:
                models = self._load_rankers(served.assigner.config, served.models)
            except ConfigError as exc:
                log.warning("experiment rankers not refreshed, keeping the loaded ones: %s", exc)
                models = served.models
            self.current = replace(
                served,
                model=model,
                model_error=error,
                models=models,
                refused_version=refused,
                degraded=degraded,
            )
            return model

    def _refused(
        self, line: str, version: str, serving: ServedModel | None, reason: str
    ) -> tuple[ServedModel | None, str | None, str]:
        """(model, error, degraded) after ``version`` was refused: keep what serves; with nothing served
        (start-up), fall back along the line's history to the last version that loads."""
        fallback, error = serving, None
        if serving is None:
            try:
                earlier = [v for v in reversed(self.registry.history(line)) if v != version]
            except (RegistryError, ModelFormatError):
                earlier = []
            for v in dict.fromkeys(earlier):
                try:
                    fallback = ServedModel.from_registry(
                        self.registry, line, v, threads=self.settings.torch_threads
                    )
                    break
                except (RankingError, ModelFormatError, ServingError, OSError) as exc:
                    log.warning("fallback %s/%s refused too: %s", line, v, exc)
            if fallback is None:
                error = f"{line}/{version} refused ({reason}); no earlier version loads: retrieval order"
            instead = f"serving {line}/{fallback.version}" if fallback else "serving retrieval order"
            log.warning("current model %s/%s not servable, nothing else loaded: %s", line, version, instead)
        reason = reason.removeprefix(f"{line}/{version} refused: ")  # ModelRefused names the version
        degraded = f"current model {line}/{version} refused ({reason}); serving {_name(fallback)}"
        return fallback, error, degraded

    def reload_experiments(self) -> Assigner:
        """Read the experiment file; if its text changed, check it, load its rankers, then swap it in whole.

        A file that fails to parse or names a ranker that cannot load raises ``ConfigError`` and changes
        nothing, so a half-written file is never served: the next reload picks up the finished one.
        """
        path = self.settings.experiments_file
        if path is None:
            return self.current.assigner
        with self._lock:
            served = self.current
            config, text = load_config(path)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            if digest == served.assigner.digest:
                return served.assigner
            self._check_fusion(config)
            models = self._load_rankers(config, served.models)
            assigner = Assigner(config, digest)
            self.current = replace(served, models=models, assigner=assigner)  # config and rankers at once
            return assigner

    def _load_rankers(
        self, config: ExperimentConfig, loaded: dict[str, ServedModel]
    ) -> dict[str, ServedModel]:
        """Every ranker the config names (loaded ones still current are reused); ConfigError if one fails."""
        out: dict[str, ServedModel] = {}
        for spec in sorted(config.rankers() - {RETRIEVAL_ORDER}):
            line, pinned = split_ranker(spec)
            try:
                version = pinned or self.registry.current(line)
            except RegistryError as exc:
                raise ConfigError(f"experiment ranker '{spec}': {exc}") from exc
            if version is None:
                raise ConfigError(f"experiment ranker '{spec}': line '{line}' has no promoted version")
            have = loaded.get(spec)
            if have is not None and have.version == version:
                out[spec] = have
                continue
            try:
                out[spec] = ServedModel.from_registry(
                    self.registry, line, version, threads=self.settings.torch_threads
                )
            except (RankingError, ModelFormatError, OSError) as exc:
                raise ConfigError(f"experiment ranker '{spec}' cannot be served: {exc}") from exc
        return out

    def _check_fusion(self, config: ExperimentConfig) -> None:
        """A misspelt fusion member would be ignored and its variant would measure the control."""
        for e in config.experiments():
            for v in e.variants:
                unknown = sorted(set(v.settings.fusion_weights or {}) - self.fusion_members)
                if unknown:
                    raise ConfigError(
                        f"experiment '{e.name}' variant '{v.name}': fusion_weights name {unknown}, "
                        f"not members of the served retriever {sorted(self.fusion_members)}"
                    )
