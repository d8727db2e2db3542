"""Wiring: which home directory, which store, where runs live. The only place these decisions are made.

Everything below ``agents/`` receives the Store (and other services) as parameters.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from agents.run_log import setup as setup_runs
from services.data.store import SQLITE_BUSY_TIMEOUT_MS, Store

if TYPE_CHECKING:  # LangGraph loads only when a pattern runs
    from langgraph.checkpoint.base import BaseCheckpointSaver

HOME_ENV = "OPTIMIZER_HOME"
THREADS_ENV = "OPTIMIZER_THREADS"
DEFAULT_THREADS = 1
# The pools a process may start: OpenBLAS / OpenMP / MKL (numpy, scipy, scikit-learn) and rayon
# (Clarabel's faer factorisation).
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")
DB_URL_ENV = "OPTIMIZER_DB_URL"
DEFAULT_HOME = Path("~/.optimizer")
DB_FILENAME = "optimizer.db"


def resolve_threads(threads: int | None = None) -> int:
    """Threads per pool: ``threads`` if given, else ``$OPTIMIZER_THREADS``, else 1.

    One thread per pool by default: the machines this runs on are shared, and a multi-threaded
    OpenBLAS ``eigh`` under contention took 0.4-3.5 s instead of 0.04-0.2 s on one thread.

    Raises:
        ValueError: a value that is not a positive integer (the message names where it came from).
    """
    if threads is not None:
        source, text = "--threads", str(threads)
    else:
        source, text = THREADS_ENV, os.environ.get(THREADS_ENV) or str(DEFAULT_THREADS)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{source}={text!r} is not a positive whole number of threads")
    return int(text)


def configure_threads(threads: int | None = None) -> int:
    """Size the BLAS, OpenMP and rayon thread pools of this process once; returns the size.

    The environment variables reach the libraries not loaded yet (the CLI imports them lazily);
    threadpoolctl resizes those already loaded (a server or test process that imported numpy).
    """
    n = resolve_threads(threads)
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(n)))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    return n


def resolve_home(home: Path | None = None) -> Path:
    """The home directory: ``home`` if given, else ``$OPTIMIZER_HOME``, else ``~/.optimizer``."""
    chosen = home if home is not None else Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)
    return chosen.expanduser().resolve()


def open_store(home: Path | None = None) -> Store:
    """Create the home directory and open the store with its schema in place.

    The store is the SQLite file ``<home>/optimizer.db`` unless ``$OPTIMIZER_DB_URL`` names
    another database (e.g. ``postgresql+psycopg://...``).
    """
    directory = resolve_home(home)
    directory.mkdir(parents=True, exist_ok=True)
    url = os.environ.get(DB_URL_ENV) or f"sqlite:///{directory / DB_FILENAME}"
    store = Store(url)
    setup_runs(store)  # the store's tables and the run tables, older run tables migrated
    return store


@contextmanager
def checkpointer(store: Store) -> Iterator[BaseCheckpointSaver[str]]:
    """A LangGraph checkpointer on the store's own database.

    SQLite: LangGraph's SqliteSaver on the same file, with the store's busy timeout so that
    several processes writing checkpoints wait rather than fail. PostgreSQL: LangGraph's
    PostgresSaver (the ``postgres`` extra), its tables created under the store's setup lock.
    """
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(
            url.database or ":memory:",
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,  # SqliteSaver serializes access with its own lock
        )
        try:
            saver = SqliteSaver(conn)
            with store.exclusive():
                saver.setup()
            yield saver
        finally:
            conn.close()
        return
    from langgraph.checkpoint.postgres import PostgresSaver

    # psycopg takes the libpq URL, without SQLAlchemy's "+driver".
    libpq_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with PostgresSaver.from_conn_string(libpq_url) as saver:
        with store.exclusive():
            saver.setup()
        yield saver
