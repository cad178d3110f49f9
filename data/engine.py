"""The distributed engine of the offline jobs: a Dask ``distributed.Client`` (docs/scale.md says why Dask).

``engine_client(settings)`` yields a client and cleans up after it:

- ``address`` None (the embedded default): a ``LocalCluster`` started in this process, ``workers`` worker
  processes (0: every core) of one thread each, no dashboard, quiet logs; shut down when the block ends.
  Nothing needs to be installed or started beforehand, as with the embedded Redis.
- ``address`` set (``tcp://scheduler:8786``): the same jobs go to a running cluster (``dask scheduler`` and
  ``dask worker`` processes, or any deployment of one); the client only disconnects afterwards.

A job submits pure functions of their partition (a shard of passages, a day), so a task that a lost worker
had started simply runs again elsewhere. ``distributed`` is imported when a client is asked for, never at
import: settings and ``--help`` stay fast.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from data.errors import ConfigError
from data.threads import all_cores

if TYPE_CHECKING:
    from distributed import Client


class EngineSettings(BaseModel):
    """Settings of the engine; part of ``search.settings.Settings`` (key ``engine``, SMARTBLOCK_ENGINE__*)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["dask"] = "dask"
    address: str | None = Field(
        default=None,
        description="Scheduler of a running Dask cluster (tcp://host:8786); None: start a local cluster of "
        "`workers` processes in-process for the job, and stop it after.",
    )
    workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Worker processes of the local cluster (one thread each); 0: every core. 1 keeps jobs "
        "that have a single-process path (index encoding) on it: the reference.",
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for `address`.")

    @property
    def is_local(self) -> bool:
        return self.address is None

    def local_workers(self) -> int:
        """Worker processes a local cluster gets: ``workers``, or every core this process may use."""
        return self.workers or all_cores()

    def local_cluster_pays(self, size: int, threshold: int) -> bool:
        """Whether a local cluster is worth starting for a job of ``size`` units (passages, impressions):
        2 or more workers, and ``size`` at least ``threshold``, below which its start outweighs the work the
        second worker would take."""
        return self.local_workers() > 1 and size >= threshold

    def describe(self) -> str:
        """Where the jobs run, for reports: ``dask local 2 workers`` or ``dask tcp://...``."""
        return f"dask local {self.local_workers()} workers" if self.is_local else f"dask {self.address}"


def _worker_environ() -> dict[str, object]:
    """Dask's environment for new worker processes, without its ``MALLOC_TRIM_THRESHOLD_`` of 64 KiB.

    That threshold makes glibc hand freed memory back to the OS at every chance, so a worker that allocates
    and frees many small tensors and objects pays for it again and again: M3's training ran 1.64x slower in
    a process with it (26.2 s against 42.9 s for two small-world epochs). Our local clusters live for one
    command, so glibc's own adaptive threshold serves better. A running cluster (``engine.address``) keeps
    the environment its operator gave it."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


@contextmanager
def optional_engine_client(settings: EngineSettings | None) -> Iterator[Client | None]:
    """``engine_client(settings)``, or None (the job's in-process path) when there are no settings."""
    if settings is None:
        yield None
        return
    with engine_client(settings) as client:
        yield client


@contextmanager
def engine_client(settings: EngineSettings) -> Iterator[Client]:
    """A Dask client on a local cluster (shut down afterwards) or on the running cluster at ``address``."""
    from distributed import Client, LocalCluster

    if settings.address is not None:
        try:
            client = Client(settings.address, timeout=settings.connect_timeout_s)
        except OSError as exc:  # TimeoutError is an OSError
            raise ConfigError(
                f"engine.address: no Dask scheduler answers at {settings.address} ({exc})"
            ) from exc
        try:
            try:  # a scheduler without workers would leave every task waiting forever
                client.wait_for_workers(1, timeout=settings.connect_timeout_s)
            except TimeoutError as exc:
                raise ConfigError(
                    f"engine.address: the Dask cluster at {settings.address} has no workers"
                ) from exc
            yield client
        finally:
            client.close()
        return
    import dask

    with _quiet_distributed():
        with dask.config.set({"distributed.nanny.pre-spawn-environ": _worker_environ()}):
            cluster = LocalCluster(
                n_workers=settings.local_workers(),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # No dashboard; the scheduler's small HTTP server (health, metrics) on a free loopback port,
                # not 8787 on every interface: two jobs at once must not collide or warn.
                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.ERROR,
            )
        try:
            with Client(cluster) as client:
                client.wait_for_workers(settings.local_workers())  # every worker takes work from the start
                yield client
        finally:
            cluster.close()


@contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Warnings and errors only from the ``distributed`` loggers of this process while a local cluster
    lives in it.

    The scheduler and the nannies run in this process. ``silence_logs`` quiets only the stream handlers
    ``distributed`` installed itself; when the root logger was configured first (a bare ``logging.warning``
    in any library does it), their INFO records reach it. A successful quickstart printed about a hundred of
    them, and a shutdown race between scheduler and workers as an INFO record with a ``CommClosedError``
    traceback. Warnings stay: a worker restarted for exceeding its memory is one a user can act on."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
