"""``smartblock serve``: the REST search API on uvicorn.

Each worker process builds its own app through ``search.serve:factory`` (indexes, model and Redis client are
per process); the world folder and config file reach the workers through environment variables.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from data.errors import ConfigError
from search.cli.common import console, state

if TYPE_CHECKING:
    from serving.supervisor import Supervisor


def _die_with_parent() -> None:
    """In the consumer, before it starts: get SIGTERM when ``serve`` ends, however it ends.

    uvicorn re-raises the signal that stopped it, so ``serve``'s own clean-up may never run; without this
    a stopped server left its consumer running. Linux only (prctl PR_SET_PDEATHSIG); elsewhere a no-op.
    """
    if sys.platform != "linux":
        return
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError):  # no such libc: the consumer then outlives a killed server
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command("serve")(serve)


def serve(
    world: Annotated[Path, typer.Option("--world", help="World folder with built indexes and features.")],
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    experiments: Annotated[
        Path | None,
        typer.Option(
            "--experiments", help="Experiment config (YAML) to run; re-read when it changes on disk."
        ),
    ] = None,
) -> None:
    """Serve /search, /events, /metrics and the search page at http://HOST:PORT/."""
    import uvicorn

    from features.connection import embedded_folder
    from search.serve import WORLD_ENV
    from serving.supervisor import Supervisor
    from serving.transport import HTTP_PROTOCOL, reuse_port_supported

    if not (world / "world.json").is_file():
        raise ConfigError(f"{world} is not a world folder (no world.json)")
    if experiments is not None:
        from serving.experiments.config import load_config

        load_config(experiments)  # refuse a bad file here, once, with its problems listed
        os.environ["SMARTBLOCK_SERVING__EXPERIMENTS_FILE"] = str(experiments.resolve())
    state.settings()  # fail here, with a clear message, rather than in every worker
    os.environ[WORLD_ENV] = str(world.resolve())
    if state.config_file is not None:
        os.environ["SMARTBLOCK_CONFIG"] = str(state.config_file.resolve())
    # Models come from wheels; a server must never reach for the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    console.print(f"serving {world} on http://{host}:{port}/ with {workers} worker(s)")
    settings = state.settings()
    consume = settings.serving.consume_events
    worker_env = dict(os.environ)
    if consume:  # the workers leave the events to the consumer process
        worker_env["SMARTBLOCK_SERVING__CONSUME_EVENTS"] = "false"
    # With several workers, each is a process of its own on a SO_REUSEPORT listener (the kernel spreads
    # connections over them); uvicorn's supervisor shares one socket, and the first worker to wake took every
    # pending connection (serving/transport.py). One worker runs in this process, as uvicorn.run does.
    own_workers = workers > 1 and reuse_port_supported()
    worker_cmds = []
    if own_workers:
        _check_port_free(host, port)
        worker = [sys.executable, "-m", "search.serve", "--host", host, "--port", str(port)]
        worker_cmds = [[*worker, "--log-level", log_level] for _ in range(workers)]
    # The supervisor starts the embedded Redis (when that is the store) before anything connects to it, and
    # one stream consumer process beside the API workers (clicks change features live, and the workers keep
    # their interpreter to themselves: an in-process consumer costs them ~15% throughput), and the API worker
    # processes; it restarts any of them when it dies.
    supervisor = Supervisor(
        settings.serving,
        consumer_cmd=[sys.executable, "-m", "search.cli", "features", "stream"] if consume else None,
        env=os.environ.copy(),
        embedded_dir=embedded_folder(settings.features),
        preexec_fn=_die_with_parent,  # only a prctl between fork and exec: no locks taken
        worker_cmds=worker_cmds,
        worker_env=worker_env,
    )
    supervisor.start()
    if own_workers:
        try:
            _wait_for_signal(supervisor)
        finally:
            supervisor.stop()
        if supervisor.failure:
            raise typer.Exit(3)
        return
    if consume:
        os.environ["SMARTBLOCK_SERVING__CONSUME_EVENTS"] = "false"
    try:
        # TCP_NODELAY on every connection: with --workers > 1 uvicorn's own listener leaves Nagle on, and each
        # keep-alive response then waited ~40 ms for the client's delayed ACK (serving/transport.py).
        uvicorn.run(
            "search.serve:factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            http=HTTP_PROTOCOL,
        )
    finally:
        supervisor.stop()


def _check_port_free(host: str, port: int) -> None:
    """Fail now, once, when something else listens on the port (each worker would fail to bind)."""
    from serving.transport import listener

    try:
        listener(host, port, reuse_port=False).close()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc


def _wait_for_signal(supervisor: Supervisor) -> None:
    """Block until SIGINT / SIGTERM (or the supervisor gives up); the workers get SIGTERM from ``stop``."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5) and not supervisor.failed.is_set():
        pass
