"""Wiring: which home directory, which store, where runs live. The only place these decisions are made.

Everything below ``agents/`` receives the Store (and other services) as parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.data.store import Store

HOME_ENV = "OPTIMIZER_HOME"
DB_URL_ENV = "OPTIMIZER_DB_URL"
DEFAULT_HOME = Path("~/.optimizer")
DB_FILENAME = "optimizer.db"
RUNS_FILENAME = "runs.db"


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
    store.create_schema()
    return store


def runs_database(home: Path | None = None) -> Path:
    """The SQLite file holding pattern runs and their LangGraph checkpoints: ``<home>/runs.db``.

    It stays a local file whatever ``$OPTIMIZER_DB_URL`` says: LangGraph's SqliteSaver needs one.
    """
    directory = resolve_home(home)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / RUNS_FILENAME
