"""What ``smartblock serve`` keeps alive: the stream consumer process, the embedded Redis and, with
``--workers`` above 1, the API worker processes.

Either may die (a SIGKILL, the OOM killer, a crash). Before this, nothing restarted them: clicks posted to
/events waited unapplied, or every Redis call failed, until an operator noticed. The supervisor is a thread
of the ``serve`` process (the parent of the consumer and the starter of the embedded server) that looks at
both a few times a second and starts a dead one again, after a backoff that doubles while restarts keep
failing quickly (so a broken install does not spin) and resets once a child has stayed up.

API workers (``python -m search.serve``, one per ``--workers``) each listen on a socket of their own bound to
the same port with SO_REUSEPORT, so the kernel spreads new connections over them (see ``search.serve``); a
worker that exits is started again like the consumer. One that exits with uvicorn's start-up failure code
(3: the app, or the bind, is broken and would fail the same way again) stops the supervisor instead, as
uvicorn's own supervisor does, and ``failure`` says why.

A frozen (SIGSTOPped) Redis is not dead and is not restarted: a second server on the same files would
corrupt them. The serving client's deadline and circuit breaker cover that case (``serving.store``).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from features.embedded import ensure_server, server_pid
from serving.config import ServingSettings

log = logging.getLogger("smartblock.supervisor")

STABLE_S = 30.0  # a child up this long has recovered: the next restart waits the shortest backoff again
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start (import, lifespan or bind)


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


@dataclass
class Child:
    """One supervised process: its command, environment and restart bookkeeping."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    restarts: Restarts
    stop_on_startup_failure: bool = False
    proc: subprocess.Popen | None = None


class Supervisor:
    """Starts the embedded Redis (when the store is the embedded one), the consumer and the API workers,
    then keeps them up."""

    def __init__(
        self,
        serving: ServingSettings,
        *,
        consumer_cmd: list[str] | None,
        env: Mapping[str, str],
        embedded_dir: Path | None,
        preexec_fn: Callable[[], None] | None = None,
        poll_s: float = 0.2,
        worker_cmds: Sequence[list[str]] = (),
        worker_env: Mapping[str, str] | None = None,
    ) -> None:
        self.embedded_dir, self.preexec_fn, self.poll_s = embedded_dir, preexec_fn, poll_s
        first, cap = serving.restart_backoff_s, serving.restart_backoff_max_s
        self.redis = Restarts(first, cap)
        self.children: list[Child] = []
        if consumer_cmd is not None:
            self.children.append(Child("stream consumer", consumer_cmd, dict(env), Restarts(first, cap)))
        for i, cmd in enumerate(worker_cmds):
            wenv = dict(worker_env if worker_env is not None else env)
            self.children.append(Child(f"API worker {i}", cmd, wenv, Restarts(first, cap), True))
        self.failure: str | None = None  # why the supervisor gave up (a worker that cannot start)
        self.failed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="smartblock-supervisor", daemon=True)

    def start(self) -> None:
        if self.embedded_dir is not None:
            ensure_server(self.embedded_dir)  # before the consumer and workers, so they find it running
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + 10
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _run(self) -> None:
        # Children start from this thread: their parent-death signal (prctl) follows the creating thread,
        # and this one lives as long as the server does.
        for child in self.children:
            self._spawn(child)
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
        for child in self.children:
            if child.proc is None or child.proc.poll() is None or self._stop.is_set():
                continue
            code = child.proc.returncode
            if child.stop_on_startup_failure and code == STARTUP_FAILURE:
                self.failure = f"{child.name} failed to start (exit code {code}): see its log above"
                log.error("%s", self.failure)
                self._stop.set()
                self.failed.set()
                return
            child.restarts.died(now)
            if child.restarts.due(now):
                log.warning("%s exited (%s): starting it again", child.name, code)
                child.restarts.restarted(now)
                self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.cmd, env=child.env, preexec_fn=self.preexec_fn)
