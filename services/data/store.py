"""The embedded store: pricing packs, portfolios, ratings, policy templates, result history and
the users allowed to call over HTTP and MCP (their API keys, kept only as hashes).

SQLAlchemy Core against a URL, so the same code serves SQLite (the default file under the home
directory) and PostgreSQL. Every write runs in one transaction: a failed write leaves the store
as it was. Packs are frozen once written and verified against their content hash when read.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import (
    Column,
    Connection,
    Date,
    DateTime,
    Dialect,
    Double,
    Engine,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.types import TypeDecorator

from services.data.importers import wide_closes
from services.data.models import (
    Lot,
    Portfolio,
    PricingPack,
    Security,
    check_user_name,
    pack_content_hash,
)
from services.data.policy import PolicyOverrides, parse_overrides
from services.errors import ConflictError, InputError, NotFoundError, OptimizerError


class DecimalText(TypeDecorator[Decimal]):
    """A Decimal stored as its exact text, so money round-trips on every backend."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


metadata = MetaData()

pricing_packs = Table(
    "pricing_packs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("asof", Date, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("n_dates", Integer, nullable=False),
    Column("n_symbols", Integer, nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
)

pack_securities = Table(
    "pack_securities",
    metadata,
    Column("pack_id", String(64), ForeignKey("pricing_packs.id"), primary_key=True),
    Column("symbol", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("sector", Text, nullable=False),
    Column("asset_class", String(16), nullable=False),
)

prices = Table(
    "prices",
    metadata,
    Column("pack_id", String(64), primary_key=True),
    Column("date", Date, primary_key=True),
    Column("symbol", String(64), primary_key=True),
    Column("close", Double, nullable=False),
    # Through the pack's own security master: a close for an unknown symbol cannot exist.
    ForeignKeyConstraint(
        ["pack_id", "symbol"], ["pack_securities.pack_id", "pack_securities.symbol"]
    ),
)

portfolios = Table(
    "portfolios",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(128), nullable=True),
    Column("cash", DecimalText, nullable=False),
    Column("description", Text, nullable=False, default=""),
)

lots = Table(
    "lots",
    metadata,
    Column("portfolio_id", String(64), ForeignKey("portfolios.id"), primary_key=True),
    Column("lot_no", Integer, primary_key=True),
    Column("symbol", String(64), nullable=False),
    Column("shares", Integer, nullable=False),
    Column("cost_basis", DecimalText, nullable=True),
    Column("acquired", Date, nullable=True),
)

quality_ratings = Table(
    "quality_ratings",
    metadata,
    Column("symbol", String(64), primary_key=True),
    Column("score", Double, nullable=False),
    Column("source", Text, nullable=False),
)

optimizer_policies = Table(
    "optimizer_policies",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("method_version", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("policy_json", Text, nullable=False),
)

proposals = Table(
    "proposals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("capability", String(128), nullable=False),
    # No foreign keys: history outlives what it refers to, and may name ad-hoc portfolios.
    Column("portfolio_id", String(64), nullable=True),
    Column("pricing_pack_id", String(64), nullable=False),
    Column("policy_id", String(64), nullable=True),
    Column("inputs_hash", String(128), nullable=False),
    Column("result_json", Text, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("user", String(128), primary_key=True),
    # SHA-256 of the key: keys are 256-bit random tokens, so a fast hash is not guessable.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

API_KEY_PREFIX = "opt_"
# Any fixed 64-bit number; it names the store's setup lock among PostgreSQL advisory locks.
SETUP_LOCK_KEY = 7_426_517_001


def hash_api_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class Store:
    """All persistent state of the optimizer, behind one SQLAlchemy engine.

    Loaded packs are cached in the instance: packs are immutable, and re-reading and re-hashing
    a pack for every call would dominate the cost of small requests.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine)
        # Write transactions: on SQLite they take the write lock up front (see _configure_sqlite).
        self.writer: Engine = self.engine.execution_options(**{SQLITE_IMMEDIATE: True})
        self._packs: dict[str, PricingPack] = {}
        self._lock_depth = 0
        self._thread_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def create_schema(self, *extra: MetaData) -> None:
        """Create any missing tables (the store's and ``extra``'s); existing ones are left alone.

        Runs under ``exclusive()``: two processes checking for a table at once would both try
        to create it.
        """
        with self.exclusive():
            for meta in (metadata, *extra):
                meta.create_all(self.engine, checkfirst=True)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store's setup lock: one process at a time creates tables or seeds.

        SQLite: an exclusive ``flock`` on ``<database>.lock`` beside the file (re-entrant within
        this instance's thread). PostgreSQL: a session advisory lock on its own connection, polled.
        Threads of one process queue on an in-process lock first.
        """
        with self._thread_lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            with self._process_lock():
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        with ExitStack() as stack:
            if self.engine.dialect.name == "sqlite":
                database = self.engine.url.database
                if database not in (None, "", ":memory:"):
                    handle = stack.enter_context(open(f"{database}.lock", "a+b"))  # noqa: SIM115
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
            else:
                conn = stack.enter_context(self.engine.connect())
                # Poll rather than wait in pg_advisory_lock: a session blocked in that statement
                # holds a snapshot, and the lock holder may be running LangGraph's migrations,
                # whose CREATE INDEX CONCURRENTLY waits for every snapshot to end: a deadlock
                # PostgreSQL does not detect. Between polls this session is idle.
                while not conn.exec_driver_sql(
                    f"SELECT pg_try_advisory_lock({SETUP_LOCK_KEY})"
                ).scalar():
                    conn.commit()
                    time.sleep(0.05)
                conn.commit()
                stack.callback(_advisory_unlock, conn)
            yield

    def close(self) -> None:
        """Release pooled connections (the store can be used again afterwards)."""
        self.engine.dispose()

    def is_empty(self) -> bool:
        """True when no pack, portfolio, rating or policy template has been stored yet."""
        with self.engine.connect() as conn:
            return all(
                conn.execute(select(func.count()).select_from(t)).scalar_one() == 0
                for t in (pricing_packs, portfolios, quality_ratings, optimizer_policies)
            )

    # --- pricing packs -------------------------------------------------------------------------

    def put_pack(self, pack: PricingPack) -> bool:
        """Store a pack; False if the identical pack is already stored.

        Raises:
            ConflictError: a pack with this id but different content exists (packs are frozen).
            InputError: the pack's frame could not be read back as stored (see ``_check_pack``).
        """
        _check_pack(pack)
        with self.writer.begin() as conn:
            existing = conn.execute(
                select(pricing_packs.c.content_hash).where(pricing_packs.c.id == pack.id)
            ).scalar_one_or_none()
            if existing == pack.content_hash:
                return False
            if existing is not None:
                raise ConflictError(
                    f"pricing pack {pack.id} already exists with content hash {existing}; the new "
                    f"content has hash {pack.content_hash}. Packs are frozen: import it under a new id.",
                    details={
                        "pack_id": pack.id,
                        "stored_hash": existing,
                        "new_hash": pack.content_hash,
                    },
                )
            conn.execute(
                pricing_packs.insert().values(
                    id=pack.id,
                    asof=pack.asof,
                    content_hash=pack.content_hash,
                    n_dates=len(pack.closes.index),
                    n_symbols=len(pack.closes.columns),
                    imported_at=datetime.now(UTC),
                )
            )
            conn.execute(
                pack_securities.insert(),
                [
                    {
                        "pack_id": pack.id,
                        "symbol": s.symbol,
                        "name": s.name,
                        "sector": s.sector,
                        "asset_class": s.asset_class,
                    }
                    for s in pack.securities
                ],
            )
            conn.execute(prices.insert(), _price_rows(pack))
        return True

    def get_pack(self, pack_id: str) -> PricingPack:
        """Load a pack, verifying that its content still hashes to the stored hash.

        Raises:
            NotFoundError: no such pack; the message lists the stored pack ids.
            OptimizerError: ``corrupt_pack`` when the rows no longer match the stored hash.
        """
        cached = self._packs.get(pack_id)
        if cached is not None:
            return cached
        with self.engine.connect() as conn:
            head = conn.execute(select(pricing_packs).where(pricing_packs.c.id == pack_id)).first()
            if head is None:
                available = list(
                    conn.execute(select(pricing_packs.c.id).order_by(pricing_packs.c.id)).scalars()
                )
                raise NotFoundError(
                    f"pricing pack {pack_id!r} not found; available packs: {', '.join(available) or '(none)'}",
                    details={"pack_id": pack_id, "available": available},
                )
            secs = conn.execute(
                select(
                    pack_securities.c.symbol,
                    pack_securities.c.name,
                    pack_securities.c.sector,
                    pack_securities.c.asset_class,
                )
                .where(pack_securities.c.pack_id == pack_id)
                .order_by(pack_securities.c.symbol)
            ).all()
            rows = conn.execute(
                select(prices.c.date, prices.c.symbol, prices.c.close).where(
                    prices.c.pack_id == pack_id
                )
            ).all()
        securities = tuple(Security(*r) for r in secs)
        closes = wide_closes([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        pack = PricingPack(id=pack_id, securities=securities, closes=closes)
        if pack.content_hash != head.content_hash:
            raise OptimizerError(
                f"pricing pack {pack_id} is corrupt: its rows hash to {pack.content_hash}, "
                f"but {head.content_hash} was stored at import. Re-import it under a new id.",
                code="corrupt_pack",
                details={
                    "pack_id": pack_id,
                    "stored_hash": head.content_hash,
                    "actual_hash": pack.content_hash,
                },
            )
        self._packs[pack_id] = pack
        return pack

    def list_packs(self) -> list[dict[str, Any]]:
        """Stored packs as JSON-ready dicts, sorted by id."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(pricing_packs).order_by(pricing_packs.c.id)).all()
        return [
            {
                "id": r.id,
                "asof": r.asof.isoformat(),
                "content_hash": r.content_hash,
                "n_dates": r.n_dates,
                "n_symbols": r.n_symbols,
            }
            for r in rows
        ]

    # --- portfolios ----------------------------------------------------------------------------

    def put_portfolio(
        self, portfolio: Portfolio, *, replace: bool = False, description: str = ""
    ) -> None:
        """Store a portfolio; lots are numbered 1.. in the order given.

        Raises:
            ConflictError: the id exists and ``replace`` is False.
        """
        with self.writer.begin() as conn:
            exists = conn.execute(
                select(portfolios.c.id).where(portfolios.c.id == portfolio.id)
            ).scalar_one_or_none()
            if exists is not None and not replace:
                raise ConflictError(
                    f"portfolio {portfolio.id} already exists; pass --replace (replace=True) to overwrite it",
                    details={"portfolio_id": portfolio.id},
                )
            values = {"owner": portfolio.owner, "cash": portfolio.cash, "description": description}
            if exists is None:
                conn.execute(portfolios.insert().values(id=portfolio.id, **values))
            else:
                conn.execute(
                    portfolios.update().where(portfolios.c.id == portfolio.id).values(**values)
                )
                conn.execute(delete(lots).where(lots.c.portfolio_id == portfolio.id))
            if portfolio.lots:
                conn.execute(
                    lots.insert(),
                    [
                        {
                            "portfolio_id": portfolio.id,
                            "lot_no": i,
                            "symbol": lot.symbol,
                            "shares": lot.shares,
                            "cost_basis": lot.cost_basis,
                            "acquired": lot.acquired,
                        }
                        for i, lot in enumerate(portfolio.lots, start=1)
                    ],
                )

    def get_portfolio(self, portfolio_id: str) -> Portfolio:
        """Load a portfolio with its lots in lot order.

        Raises:
            NotFoundError: no such portfolio; the message lists the stored ids.
        """
        with self.engine.connect() as conn:
            head = conn.execute(select(portfolios).where(portfolios.c.id == portfolio_id)).first()
            if head is None:
                available = list(
                    conn.execute(select(portfolios.c.id).order_by(portfolios.c.id)).scalars()
                )
                raise NotFoundError(
                    f"portfolio {portfolio_id!r} not found; available portfolios: {', '.join(available) or '(none)'}",
                    details={"portfolio_id": portfolio_id, "available": available},
                )
            rows = conn.execute(
                select(lots.c.symbol, lots.c.shares, lots.c.cost_basis, lots.c.acquired)
                .where(lots.c.portfolio_id == portfolio_id)
                .order_by(lots.c.lot_no)
            ).all()
        return Portfolio(
            id=head.id,
            cash=head.cash,
            lots=tuple(
                Lot(symbol=r.symbol, shares=r.shares, cost_basis=r.cost_basis, acquired=r.acquired)
                for r in rows
            ),
            owner=head.owner,
        )

    def list_portfolios(self) -> list[dict[str, Any]]:
        """Stored portfolios as JSON-ready dicts (cash as a decimal string), sorted by id."""
        n_lots = (
            select(
                lots.c.portfolio_id,
                func.count().label("n_lots"),
                func.count(lots.c.symbol.distinct()).label("n_symbols"),
            )
            .group_by(lots.c.portfolio_id)
            .subquery()
        )
        query = (
            select(portfolios, n_lots.c.n_lots, n_lots.c.n_symbols)
            .outerjoin(n_lots, n_lots.c.portfolio_id == portfolios.c.id)
            .order_by(portfolios.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "id": r.id,
                "owner": r.owner,
                "cash": str(r.cash),
                "description": r.description,
                "n_lots": r.n_lots or 0,
                "n_symbols": r.n_symbols or 0,
            }
            for r in rows
        ]

    # --- quality ratings -----------------------------------------------------------------------

    def put_ratings(self, ratings: dict[str, float], source: str) -> None:
        """Insert or overwrite the ratings given (scores 0-10, like ``min_quality_score``)."""
        bad = {
            s: v for s, v in ratings.items() if not isinstance(v, (int, float)) or not 0 <= v <= 10
        }
        if bad:
            raise InputError(
                f"quality ratings from {source}: scores must be numbers from 0 to 10; "
                f"invalid: {', '.join(f'{s}={v!r}' for s, v in sorted(bad.items()))}",
                details={"invalid": {s: str(v) for s, v in sorted(bad.items())}},
            )
        if not ratings:
            return
        with self.writer.begin() as conn:
            # Delete-then-insert is an upsert every backend understands.
            conn.execute(delete(quality_ratings).where(quality_ratings.c.symbol.in_(list(ratings))))
            conn.execute(
                quality_ratings.insert(),
                [
                    {"symbol": s, "score": float(v), "source": source}
                    for s, v in sorted(ratings.items())
                ],
            )

    def get_ratings(self) -> dict[str, float]:
        """All quality ratings, sorted by symbol."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(quality_ratings.c.symbol, quality_ratings.c.score).order_by(
                    quality_ratings.c.symbol
                )
            ).all()
        return {r.symbol: r.score for r in rows}

    # --- policy templates ----------------------------------------------------------------------

    def put_policy_template(
        self, policy_id: str, method_version: str, description: str, policy: dict[str, Any]
    ) -> None:
        """Validate and insert or overwrite a policy template.

        The validated fields are stored (decimals as strings), so what is read back parses to
        the same overrides.
        """
        overrides = parse_overrides(policy, where=f"policy template {policy_id}")
        policy_json = json.dumps(
            overrides.model_dump(mode="json", exclude_none=True), sort_keys=True
        )
        with self.writer.begin() as conn:
            conn.execute(delete(optimizer_policies).where(optimizer_policies.c.id == policy_id))
            conn.execute(
                optimizer_policies.insert().values(
                    id=policy_id,
                    method_version=method_version,
                    description=description,
                    policy_json=policy_json,
                )
            )

    def get_policy_template(self, policy_id: str) -> tuple[PolicyOverrides, str]:
        """The template's overrides and its method_version.

        Raises:
            NotFoundError: no such template; the message lists the valid ids.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(optimizer_policies).where(optimizer_policies.c.id == policy_id)
            ).first()
            if row is None:
                valid = list(
                    conn.execute(
                        select(optimizer_policies.c.id).order_by(optimizer_policies.c.id)
                    ).scalars()
                )
                raise NotFoundError(
                    f"policy template {policy_id!r} not found; valid ids: {', '.join(valid) or '(none)'}",
                    details={"policy_id": policy_id, "valid": valid},
                )
        return parse_overrides(
            json.loads(row.policy_json), where=f"policy template {policy_id}"
        ), row.method_version

    def list_policies(self) -> list[dict[str, Any]]:
        """Policy templates as JSON-ready dicts (id, method_version, description, policy), by id."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(optimizer_policies).order_by(optimizer_policies.c.id)).all()
        return [
            {
                "id": r.id,
                "method_version": r.method_version,
                "description": r.description,
                "policy": json.loads(r.policy_json),
            }
            for r in rows
        ]

    # --- result history ------------------------------------------------------------------------

    def record_proposal(
        self,
        *,
        capability: str,
        portfolio_id: str | None,
        pricing_pack_id: str,
        policy_id: str | None,
        inputs_hash: str,
        result_json: str,
    ) -> int:
        """Append a result to the history and return its id."""
        with self.writer.begin() as conn:
            result = conn.execute(
                proposals.insert().values(
                    created_at=datetime.now(UTC),
                    capability=capability,
                    portfolio_id=portfolio_id,
                    pricing_pack_id=pricing_pack_id,
                    policy_id=policy_id,
                    inputs_hash=inputs_hash,
                    result_json=result_json,
                )
            )
            return int(result.inserted_primary_key[0])

    def latest_result(self, capability: str, portfolio_id: str) -> str | None:
        """The most recently recorded ``result_json`` of ``capability`` for a portfolio, or None."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(proposals.c.result_json)
                .where(proposals.c.capability == capability, proposals.c.portfolio_id == portfolio_id)
                .order_by(proposals.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()

    def list_proposals(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent results first, as JSON-ready dicts (``result_json`` left as text)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(proposals).order_by(proposals.c.id.desc()).limit(limit)
            ).all()
        return [
            {
                "id": r.id,
                "created_at": _utc(r.created_at).isoformat(),
                "capability": r.capability,
                "portfolio_id": r.portfolio_id,
                "pricing_pack_id": r.pricing_pack_id,
                "policy_id": r.policy_id,
                "inputs_hash": r.inputs_hash,
                "result_json": r.result_json,
            }
            for r in rows
        ]

    # --- users and API keys --------------------------------------------------------------------

    def add_user(self, user: str) -> str:
        """Give ``user`` a new API key and return it; only its hash is stored.

        A revoked user gets a new key; an active one must be revoked first.

        Raises:
            InputError: the name is empty or not a valid user name.
            ConflictError: the user already has an active key.
        """
        check_user_name(user, field="user")
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self.writer.begin() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.user == user)).first()
            if row is not None and row.revoked_at is None:
                raise ConflictError(
                    f"user '{user}' already has an active API key; revoke it first with "
                    f"`optimizer users revoke {user}`",
                    details={"user": user},
                )
            conn.execute(delete(api_keys).where(api_keys.c.user == user))
            conn.execute(
                api_keys.insert().values(
                    user=user, key_hash=hash_api_key(key), created_at=datetime.now(UTC)
                )
            )
        return key

    def revoke_user(self, user: str) -> None:
        """Revoke ``user``'s API key; their data stays. Raises NotFoundError for no active key."""
        with self.writer.begin() as conn:
            done = conn.execute(
                api_keys.update()
                .where(api_keys.c.user == user, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            ).rowcount
        if not done:
            raise NotFoundError(
                f"user '{user}' has no active API key; `optimizer users list` shows the users",
                details={"field": "user", "value": user},
            )

    def user_for_api_key(self, key: str) -> str | None:
        """The user an active API key belongs to, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.user).where(
                    api_keys.c.key_hash == hash_api_key(key), api_keys.c.revoked_at.is_(None)
                )
            ).first()
        return None if row is None else str(row.user)

    def list_users(self) -> list[dict[str, Any]]:
        """Users by name, with when their key was created and (if so) revoked."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.user)).all()
        return [
            {
                "user": r.user,
                "created_at": _utc(r.created_at).isoformat(),
                "revoked_at": None if r.revoked_at is None else _utc(r.revoked_at).isoformat(),
                "active": r.revoked_at is None,
            }
            for r in rows
        ]


SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option: begin this transaction with BEGIN IMMEDIATE (writes) rather than BEGIN.
SQLITE_IMMEDIATE = "sqlite_immediate"


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys on, WAL with a busy timeout, and transactions begun by SQLAlchemy.

    pysqlite only opens a transaction before DML, so a read-then-write (check a pack's hash,
    then insert) would not be one transaction; this is SQLAlchemy's documented remedy. WAL lets
    readers work beside one writer, and the busy timeout makes a second writer (another
    process, another ``--workers`` worker) wait for the lock instead of failing with
    "database is locked". The timeout is set first: switching to WAL itself needs the lock.
    A transaction that reads and then writes must take the write lock when it begins
    (``BEGIN IMMEDIATE``, the ``sqlite_immediate`` execution option of ``Store.writer``): one
    that upgrades later fails at once, without waiting, if another connection wrote since its
    read began. Plain reads keep ``BEGIN`` and never wait for writers.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _check_pack(pack: PricingPack) -> None:
    """Refuse a pack whose frame would not read back identically.

    Only closes are stored (no NaN), so a date or symbol with no close at all would vanish on
    the way back and the hash would no longer match; every priced symbol must also be in the
    pack's own security master.
    """
    closes = pack.closes
    problems: list[str] = []
    if closes.empty:
        problems.append("closes is empty")
    if not closes.index.is_unique or not closes.columns.is_unique:
        problems.append("closes has duplicate dates or symbols")
    values = closes.to_numpy(dtype="float64")
    present = ~np.isnan(values)
    if not present.any(axis=1).all():
        problems.append("some dates have no close for any symbol")
    if not present.any(axis=0).all():
        problems.append("some symbols have no close at all")
    if not (np.isfinite(values[present]).all() and (values[present] > 0).all()):
        problems.append("closes must be finite and greater than 0")
    unknown = sorted(set(map(str, closes.columns)) - {s.symbol for s in pack.securities})
    if unknown:
        problems.append(f"symbols priced but not in the security master: {', '.join(unknown)}")
    if problems:
        raise InputError(
            f"pricing pack {pack.id} cannot be stored: {'; '.join(problems)}",
            details={"problems": problems},
        )
    actual = pack_content_hash(pack.securities, closes)
    if actual != pack.content_hash:
        raise InputError(
            f"pricing pack {pack.id} carries content hash {pack.content_hash}, but its content hashes to {actual}",
            details={"pack_id": pack.id, "given_hash": pack.content_hash, "actual_hash": actual},
        )


def _price_rows(pack: PricingPack) -> list[dict[str, Any]]:
    long = pack.closes.stack().dropna()
    days: dict[Any, date] = {}
    rows = []
    for (ts, symbol), close in long.items():
        day = days.get(ts)
        if day is None:
            day = days[ts] = ts.date()
        rows.append({"pack_id": pack.id, "date": day, "symbol": str(symbol), "close": float(close)})
    return rows


def _advisory_unlock(conn: Connection) -> None:
    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({SETUP_LOCK_KEY})")
    conn.commit()


def _utc(value: datetime) -> datetime:
    # SQLite keeps no offset; everything is written in UTC, so a naive value read back is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
