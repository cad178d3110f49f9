"""The API as each uvicorn worker builds it: ``search.serve:factory`` (``smartblock serve`` starts it).

The roof owns the settings, so the zero-argument factory lives here: it reads the process settings and the
world folder from ``SMARTBLOCK_SERVE_WORLD`` and hands both to ``serving.app.create_app``.

``python -m search.serve --host H --port P`` is one API worker of ``smartblock serve --workers N`` (N > 1):
it binds a listening socket of its own with SO_REUSEPORT on the shared port and serves the factory's app on
it (``serving.transport``); ``serve`` starts N of them and restarts any that exits (``serving.supervisor``).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from search.settings import get_settings
from serving.app import create_app

WORLD_ENV = "SMARTBLOCK_SERVE_WORLD"


def factory() -> FastAPI:
    world = os.environ.get(WORLD_ENV)
    if not world:
        raise RuntimeError(f"{WORLD_ENV} is not set: start the server with `smartblock serve --world DIR`")
    return create_app(get_settings(), Path(world))


def run_worker(host: str, port: int, log_level: str) -> None:
    """Serve the factory's app on a SO_REUSEPORT listener of this process's own, until SIGINT / SIGTERM."""
    import sys

    import uvicorn

    from serving.transport import HTTP_PROTOCOL, listener

    config = uvicorn.Config(
        "search.serve:factory", factory=True, host=host, port=port, log_level=log_level, http=HTTP_PROTOCOL
    )
    try:
        sock = listener(host, port, reuse_port=True)
    except OSError as exc:
        print(f"error: cannot bind {host}:{port}: {exc}", file=sys.stderr)
        sys.exit(3)  # uvicorn's start-up failure code: the supervisor stops instead of restarting
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)


def _main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="One API worker of `smartblock serve --workers N`.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    run_worker(args.host, args.port, args.log_level)


if __name__ == "__main__":
    _main()
