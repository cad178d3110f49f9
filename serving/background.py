"""Threads a worker runs beside its requests: the event-stream consumer and the registry watcher.

The consumer makes clicks posted to /events change the live features within about a second (the stream
consumer of the feature store, run in-process for a self-contained server; a deployment can run
``smartblock features stream`` instead and set ``serving.consume_events: false``). The watcher makes every
worker follow a promotion or rollback done through another worker or the CLI, and a change of the
experiment config file.
"""

from __future__ import annotations

import logging
import os
import threading

import redis

from data.errors import ConfigError, ModelFormatError
from features.stream import StreamConsumer, default_consumer_name
from ranking.errors import RankingError
from serving.pipeline import SearchPipeline
from serving.store import GuardedStore

log = logging.getLogger("smartblock.serving")


class Background:
    def __init__(
        self, pipeline: SearchPipeline, store: GuardedStore, *, consume: bool, poll_s: float
    ) -> None:
        self.pipeline, self.store, self.consume, self.poll_s = pipeline, store, consume, poll_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.consumer: StreamConsumer | None = None
        self._last_config_error = ""

    def start(self) -> None:
        targets = [self._watch_registry]
        if self.consume:
            targets.append(self._consume)
        for target in targets:
            thread = threading.Thread(target=target, name=f"smartblock-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _watch_registry(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.pipeline.reload_model()
            except (RankingError, ModelFormatError, ConfigError) as exc:  # a broken new version: keep the old
                log.warning("model reload failed, keeping %s: %s", self.pipeline.model, exc)
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("model reload failed, keeping %s", self.pipeline.model)
            try:
                self.pipeline.reload_experiments()
            except ConfigError as exc:  # half-written or invalid: keep the loaded config, say why once
                if str(exc) != self._last_config_error:
                    log.warning("experiment config not reloaded, keeping the loaded one: %s", exc)
                self._last_config_error = str(exc)
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("experiment config reload failed, keeping the loaded one")
            else:
                self._last_config_error = ""

    def _consume(self) -> None:
        store = self.store.store
        # One name per process: workers of one host must not read each other's pending entries as their own.
        self.consumer = StreamConsumer(
            store, store.settings, consumer=f"{default_consumer_name()}-{os.getpid()}"
        )
        failure = ""
        while not self._stop.is_set():
            try:
                # Polling (not a blocking read): the serving client's socket timeout is tens of ms.
                handled = self.consumer.attempt(block_ms=0)
            except redis.RedisError as exc:  # not one waiting mends (a key of another type): named once
                if repr(exc) != failure:
                    log.error("stream consumer step failed, retrying: %r", exc)
                failure, handled = repr(exc), None
            if handled is None:  # Redis could not take it now (StreamConsumer.attempt) or the step failed
                self._stop.wait(0.5)
            else:
                failure = ""
                if handled == 0:
                    self._stop.wait(0.1)
