"""What ``smartblock serve`` keeps alive beside its API workers: the stream consumer process and the
embedded Redis.

Either may die (a SIGKILL, the OOM killer, a crash). Before this, nothing restarted them: clicks posted to
/events waited unapplied, or every Redis call failed, until an operator noticed. The supervisor is a thread
of the ``serve`` process (the parent of the consumer and the starter of the embedded server) that looks at
both a few times a second and starts a dead one again, after a backoff that doubles while restarts keep
failing quickly (so a broken install does not spin) and resets once a child has stayed up.

A frozen (SIGSTOPped) Redis is not dead and is not restarted: a second server on the same files would
corrupt them. The serving client's deadline and circuit breaker cover that case (``serving.store``).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from features.embedded import ensure_server, server_pid
from serving.config import ServingSettings

log = logging.getLogger("smartblock.supervisor")

STABLE_S = 30.0  # a child up this long has recovered: the next restart waits the shortest backoff again


@dataclass
class Restarts:
    """Restart bookkeeping of one child: when it may start again, and how often it did."""

    first_s: float
    max_s: float
    delay_s: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    due_at: float | None = None  # set while the child is dead: the time of the next attempt
    count: int = 0

    def died(self, now: float) -> None:
        if self.due_at is not None:
            return
        quick = now - self.started_at < STABLE_S
        self.delay_s = min(self.delay_s * 2, self.max_s) if quick and self.delay_s else self.first_s
        self.due_at = now + self.delay_s

    def due(self, now: float) -> bool:
        return self.due_at is not None and now >= self.due_at

    def restarted(self, now: float) -> None:
        self.started_at, self.due_at = now, None
        self.count += 1


class Supervisor:
    """Starts the embedded Redis (when the store is the embedded one) and the consumer, then keeps both up."""

    def __init__(
        self,
        serving: ServingSettings,
        *,
        consumer_cmd: list[str] | None,
        env: Mapping[str, str],
        embedded_dir: Path | None,
        preexec_fn: Callable[[], None] | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.consumer_cmd, self.env, self.embedded_dir = consumer_cmd, dict(env), embedded_dir
        self.preexec_fn, self.poll_s = preexec_fn, poll_s
        first, cap = serving.restart_backoff_s, serving.restart_backoff_max_s
        self.redis, self.consumer = Restarts(first, cap), Restarts(first, cap)
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="smartblock-supervisor", daemon=True)

    def start(self) -> None:
        if self.embedded_dir is not None:
            ensure_server(self.embedded_dir)  # before the consumer and workers, so they find it running
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _run(self) -> None:
        # The consumer starts from this thread: its parent-death signal (prctl) follows the creating thread,
        # and this one lives as long as the server does.
        if self.consumer_cmd is not None:
            self._spawn_consumer()
        while not self._stop.wait(self.poll_s):
            try:
                self._check()
            except Exception:  # the supervisor must outlive any one failed restart
                log.exception("supervisor check failed")

    def _check(self) -> None:
        now = time.monotonic()
        if self.embedded_dir is not None and server_pid(self.embedded_dir) is None:
            self.redis.died(now)
            if self.redis.due(now):
                log.warning("embedded Redis in %s is gone: starting it again", self.embedded_dir)
                self.redis.restarted(now)  # a failed start counts as a quick death: the backoff grows
                ensure_server(self.embedded_dir)
        if self.proc is not None and self.proc.poll() is not None:
            self.consumer.died(now)
            if self.consumer.due(now):
                log.warning("stream consumer exited (%s): starting it again", self.proc.returncode)
                self.consumer.restarted(now)
                self._spawn_consumer()

    def _spawn_consumer(self) -> None:
        assert self.consumer_cmd is not None
        self.proc = subprocess.Popen(self.consumer_cmd, env=self.env, preexec_fn=self.preexec_fn)
