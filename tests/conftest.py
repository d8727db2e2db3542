"""Shared fixtures: an isolated OPTIMIZER_HOME, stores (empty and seeded) and small CSV files."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select

from agents.cli import main
from agents.wiring import DB_FILENAME, open_store
from benchmarks.http_load import throwaway_postgres_database
from services.data.seeds import seed
from services.data.store import Store, metadata

# A small valid pack: three equities and an index over four dates (AAA misses the first day).
PRICES_CSV = """date,symbol,close
2022-01-03,BBB,50.0
2022-01-04,BBB,51.5
2022-01-05,BBB,52.25
2022-01-06,BBB,51.0
2022-01-04,AAA,10.0
2022-01-05,AAA,10.5
2022-01-06,AAA,10.25
2022-01-03,CCC,200
2022-01-04,CCC,201
2022-01-05,CCC,199.5
2022-01-06,CCC,202.75
2022-01-03,IDX,4000
2022-01-04,IDX,4010.5
2022-01-05,IDX,3990.25
2022-01-06,IDX,4020
"""

SECURITIES_CSV = """symbol,name,sector,asset_class
AAA,Alpha Corp,Technology,equity
BBB,Beta Inc,Energy,equity
CCC,Gamma Fund,Diversified,etf
IDX,Test Index,,index
"""

POSITIONS_CSV = """symbol,shares,cost_basis,acquired
AAA,100,9.50,2021-03-01
BBB,20,,
AAA,50,11.25,2021-09-15
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_of(err: str) -> dict[str, Any]:
    """The JSON error object: the last line on stderr (a log line with a traceback may precede it)."""
    return json.loads(err.strip().splitlines()[-1])


def _write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (creating directories) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _row_counts(store: Store) -> dict[str, int]:
    """Rows in every table, to show that a failed write changed nothing."""
    with store.engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in sorted(metadata.tables.items())
        }


def make_seed_root(root: Path) -> Path:
    """A complete, tiny seed directory laid out like ``seeds/optimizer``."""
    _write(root / "packs" / "PP_TEST" / "prices.csv", PRICES_CSV)
    _write(root / "packs" / "PP_TEST" / "securities.csv", SECURITIES_CSV)
    _write(root / "portfolios" / "P_ONE.csv", POSITIONS_CSV)
    files = {
        "constraint_defaults.json": {
            "version": 1,
            "commission_per_trade": "5.00",
            "market_impact_bps": 15.0,
            "min_trade_value": "100",
            "risk_free_rate": 0.02,
            "annualization_days": 252,
        },
        "policy_templates.json": {
            "version": 1,
            "templates": [
                {
                    "id": "T_CAPPED",
                    "method_version": "1",
                    "description": "caps",
                    "policy": {
                        "method": "min_variance",
                        "max_single_position_pct": 40.0,
                        "commission_per_trade": "1.50",
                    },
                },
                {"id": "T_PLAIN", "method_version": "1", "description": "plain", "policy": {}},
            ],
        },
        "quality_ratings.json": {
            "version": 1,
            "source": "test",
            "note": "",
            "ratings": {"AAA": 7.5, "BBB": 3.0},
        },
        "benchmarks.json": {
            "version": 1,
            "benchmarks": {"B1": {"description": "", "weights": {"CCC": 0.6, "AAA": 0.4}}},
        },
        "portfolios.json": {
            "version": 1,
            "portfolios": [
                {
                    "id": "P_ONE",
                    "owner": None,
                    "cash": "1000.50",
                    "description": "one",
                    "positions": "portfolios/P_ONE.csv",
                }
            ],
        },
    }
    for name, data in files.items():
        _write(root / name, json.dumps(data))
    return root


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Each test starts from structlog's defaults: a CLI test's configuration (level WARNING)
    would otherwise hide the INFO lines a later test captures with ``capture_logs``."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def write() -> Callable[[Path, str], Path]:
    """``write(path, text) -> path``, creating parent directories."""
    return _write


@pytest.fixture
def row_counts() -> Callable[[Store], dict[str, int]]:
    """``row_counts(store)``: rows per table, to show that a failed write changed nothing."""
    return _row_counts


@pytest.fixture
def positions_file(tmp_path: Path) -> Path:
    """A valid positions CSV: two lots of AAA, one of BBB (with and without basis and date)."""
    return _write(tmp_path / "positions.csv", POSITIONS_CSV)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty OPTIMIZER_HOME; the environment cannot leak a real home or database in."""
    path = tmp_path / "home"
    monkeypatch.setenv("OPTIMIZER_HOME", str(path))
    for var in ("OPTIMIZER_DB_URL", "OPTIMIZER_LOG_LEVEL", "OPTIMIZER_LOG_FORMAT"):
        monkeypatch.delenv(var, raising=False)
    return path


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    """An empty store in the tmp home."""
    s = open_store()
    yield s
    s.close()


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database seeded once from the packaged seed files, copied by ``seeded_home``."""
    directory = tmp_path_factory.mktemp("seeded")
    s = open_store(directory)
    seed(s)
    s.close()
    return directory / DB_FILENAME


@pytest.fixture
def seeded_home(home: Path, seeded_db: Path) -> Path:
    """OPTIMIZER_HOME holding a store seeded with the packaged demo data."""
    home.mkdir(parents=True)
    shutil.copyfile(seeded_db, home / DB_FILENAME)
    return home


@pytest.fixture
def seeded_store(seeded_home: Path) -> Iterator[Store]:
    """A store seeded with the packaged demo data (pack, portfolios, ratings, templates)."""
    s = open_store()
    yield s
    s.close()


@pytest.fixture
def pack_files(tmp_path: Path) -> tuple[Path, Path]:
    """Valid prices and securities CSV files of a small pack."""
    return _write(tmp_path / "prices.csv", PRICES_CSV), _write(
        tmp_path / "securities.csv", SECURITIES_CSV
    )


@pytest.fixture
def tiny_seed_root(tmp_path: Path) -> Path:
    """A tiny seed directory with one pack, portfolio, two templates and two ratings."""
    return make_seed_root(tmp_path / "seedroot")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--golden-update",
        choices=("never", "missing", "always"),
        default="never",
        help="golden files: 'never' compares (default), 'missing' writes absent expected files, "
        "'always' rewrites them (review the diff like code)",
    )


@pytest.fixture
def golden_update(request: pytest.FixtureRequest) -> str:
    """The --golden-update mode: never | missing | always."""
    return str(request.config.getoption("--golden-update"))


@pytest.fixture
def agent(seeded_store: Store):
    """An OptimizerAgent over a freshly seeded store in a tmp home."""
    from agents.agent import OptimizerAgent

    return OptimizerAgent(seeded_store)


@pytest.fixture(scope="module")
def module_store(seeded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A seeded store shared by one test module: its pricing pack is read once, which keeps
    modules that call capabilities many times quick. Use ``seeded_store`` to write freely."""
    directory = tmp_path_factory.mktemp("module_store")
    shutil.copyfile(seeded_db, directory / DB_FILENAME)
    s = open_store(directory)
    yield s
    s.close()


# --- databases: every module that tests storage runs on SQLite and on PostgreSQL ----------------

PG_URL_ENV = "OPTIMIZER_TEST_PG_URL"


def _postgres_server_url() -> str:
    """The PostgreSQL server the tests may create databases on, or skip (fail under CI)."""
    url = os.environ.get(PG_URL_ENV)
    if url:
        return url
    message = (
        f"PostgreSQL tests need ${PG_URL_ENV} (a server URL they may create databases on): run "
        '.ci/run, or `eval "$(.ci/postgres start)"` and then python -m pytest'
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message + " -- under CI a missing PostgreSQL is a failure")
    pytest.skip(message)


def fresh_postgres_database() -> AbstractContextManager[str]:
    """A new, empty database on the test server (dropped afterwards); yields its SQLAlchemy URL."""
    return throwaway_postgres_database(_postgres_server_url(), "opt_test")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """The store's database for this test: None for SQLite in ``home``, or a fresh PostgreSQL
    database, set as $OPTIMIZER_DB_URL so processes started by the test use it too."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_postgres_database() as url:
        monkeypatch.setenv("OPTIMIZER_DB_URL", url)
        yield url
