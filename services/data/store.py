"""The embedded store: pricing packs, portfolios, ratings, policy templates, result history and
the users allowed to call over HTTP and MCP (their API keys, kept only as hashes).

SQLAlchemy Core against a URL, so the same code serves SQLite (the default file under the home
directory) and PostgreSQL. Every write runs in one transaction: a failed write leaves the store
as it was. Packs are frozen once written and verified against their content hash when read.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
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
    inspect,
    select,
    text,
)
from sqlalchemy.types import TypeDecorator

from services.data.models import (
    Lot,
    Portfolio,
    PricingPack,
    Security,
    check_user_name,
    pack_content_hash,
)
from services.data.policy import PolicyOverrides, parse_overrides
from services.errors import (
    ConflictError,
    DomainError,
    InputError,
    NotFoundError,
    OptimizerError,
)


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
    # Added after stores existed (nullable: older rows read as not halted).
    Column("halted", Boolean, nullable=True),
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

# A named user's own ratings, seen by that user only, over the shared ones (quality_ratings).
user_ratings = Table(
    "user_ratings",
    metadata,
    Column("owner", String(128), primary_key=True),
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
    # Who asked (null: the local operator); only they can refer to the proposal by its id.
    Column("user", String(128), nullable=True),
)

# Who owned a portfolio before and after the operator reassigned it: an audit trail, kept apart
# from the portfolio so that replacing the portfolio's contents never rewrites it.
portfolio_owner_changes = Table(
    "portfolio_owner_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("portfolio_id", String(64), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    # NULL is the local operator, as everywhere else (RequestContext.user=None).
    Column("changed_by", String(128), nullable=True),
    Column("previous_owner", String(128), nullable=True),
    Column("new_owner", String(128), nullable=True),
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

# --- the rebalancing lifecycle: targets, portfolio versions, rebalance history --------------

portfolio_targets = Table(
    "portfolio_targets",
    metadata,
    Column("portfolio_id", String(64), ForeignKey("portfolios.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("policy_id", String(64), nullable=True),
    Column("source", Text, nullable=False),
    # {symbol: weight_pct}, sorted keys; the rest of 100% is the cash target.
    Column("weights_json", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

portfolio_versions = Table(
    "portfolio_versions",
    metadata,
    Column("portfolio_id", String(64), ForeignKey("portfolios.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("cash", DecimalText, nullable=False),
    # [{symbol, shares, cost_basis, acquired}] in lot order: the lots as they were.
    Column("lots_json", Text, nullable=False),
    Column("rebalance_id", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

rebalances = Table(
    "rebalances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("portfolio_id", String(64), ForeignKey("portfolios.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("run_id", String(128), nullable=True),
    Column("pricing_pack_id", String(64), nullable=False),
    Column("asof", Date, nullable=False),
    Column("version_before", Integer, nullable=False),
    Column("version_after", Integer, nullable=True),
    Column("approved_by", String(128), nullable=True),
    Column("note", Text, nullable=True),
    # Trades, costs, before/after weights and the policy, as canonical JSON.
    Column("record_json", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

portfolio_restrictions = Table(
    "portfolio_restrictions",
    metadata,
    Column("portfolio_id", String(64), ForeignKey("portfolios.id"), primary_key=True),
    Column("symbol", String(64), primary_key=True),
    # 'restricted' (never bought) or 'frozen' (never traded).
    Column("kind", String(16), nullable=False),
)

portfolio_preferences = Table(
    "portfolio_preferences",
    metadata,
    Column("portfolio_id", String(64), ForeignKey("portfolios.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    # The whole set as validated by services.lifecycle.preferences, canonical JSON.
    Column("preferences_json", Text, nullable=False),
    Column("changed_by", String(128), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
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
        # hide_parameters: a database error never quotes the rows it was writing (lots, cash).
        self.engine: Engine = create_engine(url, hide_parameters=True)
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine)
        translate_storage_errors(self.engine)
        self._packs: dict[str, PricingPack] = {}
        self._lock_depth = 0
        self._thread_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def create_schema(self, *extra: MetaData) -> None:
        """Create any missing tables (the store's and ``extra``'s); existing ones are left alone.

        Nullable columns added to a table after a store was created (``proposals.user``,
        ``pack_securities.halted``) are added to it, so an older store keeps working. Runs under
        ``exclusive()``: two processes checking for a table at once would both try to create it.
        """
        with self.exclusive():
            for meta in (metadata, *extra):
                meta.create_all(self.engine, checkfirst=True)
            self._add_missing_columns()

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
                database = _sqlite_path(self.engine.url.database)
                if database is not None:
                    try:
                        handle = stack.enter_context(open(f"{database}.lock", "a+b"))  # noqa: SIM115
                    except OSError:
                        # A read-only home: nothing can be created or seeded there anyway, and
                        # the write that tries is refused as a read-only store.
                        handle = None
                    if handle is not None:
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

    def _add_missing_columns(self) -> None:
        quote = self.engine.dialect.identifier_preparer.quote
        for table in (proposals, pack_securities):
            existing = {c["name"] for c in inspect(self.engine).get_columns(table.name)}
            missing = [c for c in table.columns if c.name not in existing and c.nullable]
            if missing:
                with write_transaction(self.engine) as conn:
                    for column in missing:
                        kind = column.type.compile(dialect=self.engine.dialect)
                        conn.execute(text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}"))

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
        with write_transaction(self.engine) as conn:
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
                        "halted": s.halted,
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
                    pack_securities.c.halted,
                )
                .where(pack_securities.c.pack_id == pack_id)
                .order_by(pack_securities.c.symbol)
            ).all()
            result = conn.execute(
                select(prices.c.date, prices.c.symbol, prices.c.close).where(
                    prices.c.pack_id == pack_id
                )
            )
            try:
                # The driver's own tuples: SQLAlchemy's Row objects and date parsing cost 1.2 of
                # 2 s for a 500-asset pack (378,500 rows). Dates come as the driver gives them
                # (ISO text from SQLite, dates from PostgreSQL); wide_closes takes either, and the
                # content hash below checks the frame.
                with _collector_paused():
                    rows = result.cursor.fetchall()
            finally:
                result.close()
        from services.data.importers import wide_closes  # pandas, only when a pack is read

        securities = tuple(Security(*r[:4], halted=bool(r[4])) for r in secs)
        with _collector_paused():
            dates, symbols, values = zip(*rows, strict=True) if rows else ((), (), ())
        closes = wide_closes(dates, symbols, values)
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

    def unknown_symbols(self, symbols: Sequence[str]) -> list[str]:
        """The ``symbols`` that no stored pack lists in its security master, sorted."""
        wanted = sorted(set(symbols))
        if not wanted:
            return []
        with self.engine.connect() as conn:
            known = set(conn.execute(
                select(pack_securities.c.symbol).where(pack_securities.c.symbol.in_(wanted)).distinct()
            ).scalars())
        return [s for s in wanted if s not in known]

    def latest_pack_id(self) -> str:
        """The id of the pack with the latest asof (ties: the greatest id).

        Raises:
            NotFoundError: no pack is stored.
        """
        packs = self.list_packs()
        if not packs:
            raise NotFoundError(
                "the store has no pricing pack; import one with `optimizer packs import` or run "
                "`optimizer seed`"
            )
        return max(packs, key=lambda p: (p["asof"], p["id"]))["id"]

    # --- portfolios ----------------------------------------------------------------------------

    def put_portfolio(
        self,
        portfolio: Portfolio,
        *,
        replace: bool = False,
        description: str = "",
        user: str | None = None,
    ) -> None:
        """Store a portfolio as ``user`` (None: the local operator); lots are numbered 1.. in order.

        A named user may only store portfolios they own, and may replace only their own. The
        operator may store any portfolio; replacing one under another owner reassigns it, and
        the reassignment is recorded (``portfolio_owner_changes``).

        Raises:
            InputError: a named user stores a portfolio owned by someone else, or the owner is
                not a valid user name.
            ConflictError: the id exists and ``replace`` is False, or (to a named user) the id
                belongs to someone else; that message names no owner.
        """
        if portfolio.owner is not None:
            check_user_name(portfolio.owner, field="owner")
        if user is not None and portfolio.owner != user:
            raise InputError(
                f"owner {portfolio.owner!r} is not you ({user!r}): a user imports only their "
                "own portfolios; omit the owner, or ask the operator to assign one",
                details={"field": "owner", "value": portfolio.owner},
            )
        with write_transaction(self.engine) as conn:
            row = conn.execute(
                select(portfolios.c.id, portfolios.c.owner).where(portfolios.c.id == portfolio.id)
            ).first()
            if row is not None and user is not None and row.owner != user:
                raise ConflictError(
                    f"portfolio id {portfolio.id!r} cannot be used; choose another id",
                    details={"field": "id", "value": portfolio.id},
                )
            if row is not None and not replace:
                raise ConflictError(
                    f"portfolio {portfolio.id} already exists; pass --replace (replace=True) to overwrite it",
                    details={"portfolio_id": portfolio.id},
                )
            values = {"owner": portfolio.owner, "cash": portfolio.cash, "description": description}
            if row is None:
                conn.execute(portfolios.insert().values(id=portfolio.id, **values))
            else:
                conn.execute(
                    portfolios.update().where(portfolios.c.id == portfolio.id).values(**values)
                )
                conn.execute(delete(lots).where(lots.c.portfolio_id == portfolio.id))
                if row.owner != portfolio.owner:
                    conn.execute(
                        portfolio_owner_changes.insert().values(
                            portfolio_id=portfolio.id,
                            changed_at=datetime.now(UTC),
                            changed_by=user,
                            previous_owner=row.owner,
                            new_owner=portfolio.owner,
                        )
                    )
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

    def get_portfolio(self, portfolio_id: str, *, user: str | None = None) -> Portfolio:
        """Load a portfolio with its lots in lot order, as ``user`` (None: the local operator).

        Raises:
            NotFoundError: no such portfolio, or (to a named user) someone else's: one message
                for both, naming no other portfolio, so nothing can be learnt by probing ids.
        """
        with self.engine.connect() as conn:
            head = conn.execute(select(portfolios).where(portfolios.c.id == portfolio_id)).first()
            _check_usable(head, portfolio_id, user)
            held = _read_lots(conn, portfolio_id)
        return Portfolio(id=head.id, cash=head.cash, lots=tuple(held), owner=head.owner)

    def check_portfolio_access(self, portfolio_id: str, *, user: str | None) -> None:
        """``get_portfolio``'s access rule without reading the lots: the same NotFoundError for a
        missing portfolio and (to a named user) someone else's."""
        with self.engine.connect() as conn:
            head = conn.execute(
                select(portfolios.c.owner).where(portfolios.c.id == portfolio_id)
            ).first()
        _check_usable(head, portfolio_id, user)

    def portfolio_owner(self, portfolio_id: str) -> str | None:
        """The owner of a stored portfolio (None: the operator's). For the operator only.

        Raises:
            NotFoundError: no such portfolio.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(portfolios.c.owner).where(portfolios.c.id == portfolio_id)
            ).first()
        if row is None:
            raise portfolio_not_found(portfolio_id)
        return None if row.owner is None else str(row.owner)

    def portfolio_owner_changes(self, portfolio_id: str) -> list[dict[str, Any]]:
        """Reassignments of a portfolio, oldest first: when, by whom (None: the operator), from, to."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(portfolio_owner_changes)
                .where(portfolio_owner_changes.c.portfolio_id == portfolio_id)
                .order_by(portfolio_owner_changes.c.id)
            ).all()
        return [
            {
                "changed_at": _utc(r.changed_at).isoformat(),
                "changed_by": r.changed_by,
                "previous_owner": r.previous_owner,
                "new_owner": r.new_owner,
            }
            for r in rows
        ]

    def list_portfolios(self, *, user: str | None = None) -> list[dict[str, Any]]:
        """Stored portfolios as JSON-ready dicts (cash as a decimal string), sorted by id.

        A named ``user`` sees only their own; the operator (None) sees every portfolio.
        """
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
        if user is not None:
            query = query.where(portfolios.c.owner == user)
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

    def put_ratings(self, ratings: dict[str, float], source: str, owner: str | None = None) -> None:
        """Insert or overwrite the ratings given (scores 0-10, like ``min_quality_score``).

        With ``owner`` they are that user's own (seen by them only, over the shared ones);
        without, the shared ratings every caller sees (the operator's and the demo's).
        """
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
        if owner is not None:
            check_user_name(owner, field="user")
        with write_transaction(self.engine) as conn:
            # Delete-then-insert is an upsert every backend understands.
            if owner is None:
                conn.execute(delete(quality_ratings).where(quality_ratings.c.symbol.in_(list(ratings))))
                conn.execute(quality_ratings.insert(), [
                    {"symbol": s, "score": float(v), "source": source} for s, v in sorted(ratings.items())])
            else:
                conn.execute(delete(user_ratings).where(
                    (user_ratings.c.owner == owner) & user_ratings.c.symbol.in_(list(ratings))))
                conn.execute(user_ratings.insert(), [
                    {"owner": owner, "symbol": s, "score": float(v), "source": source}
                    for s, v in sorted(ratings.items())])

    def rating_sources(self, user: str | None = None) -> dict[str, tuple[float, str]]:
        """The ratings ``user`` sees, as {symbol: (score, where it came from)}, sorted by symbol.

        The shared ratings (source as stored, e.g. ``demo``), overlaid by the user's own
        (``SOURCE (imported by USER)``); the operator (None) sees the shared ones.
        """
        with self.engine.connect() as conn:
            shared = conn.execute(select(quality_ratings.c.symbol, quality_ratings.c.score,
                                         quality_ratings.c.source)).all()
            own = [] if user is None else conn.execute(
                select(user_ratings.c.symbol, user_ratings.c.score, user_ratings.c.source)
                .where(user_ratings.c.owner == user)).all()
        out = {r.symbol: (float(r.score), str(r.source)) for r in shared}
        out.update({r.symbol: (float(r.score), f"{r.source} (imported by {user})") for r in own})
        return dict(sorted(out.items()))

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
        with write_transaction(self.engine) as conn:
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
        user: str | None = None,
    ) -> int:
        """Append a result to the history and return its id; ``user`` is who asked (None: the operator)."""
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                proposals.insert().values(
                    created_at=datetime.now(UTC),
                    capability=capability,
                    portfolio_id=portfolio_id,
                    pricing_pack_id=pricing_pack_id,
                    policy_id=policy_id,
                    inputs_hash=inputs_hash,
                    result_json=result_json,
                    user=user,
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

    def find_proposal(self, capability: str, hash_prefix: str, user: str | None) -> dict[str, Any] | None:
        """The latest recorded result of ``capability`` whose inputs hash starts with ``hash_prefix``.

        A named ``user`` finds only what they recorded; ``None`` (the local operator) finds any.
        Returns None when there is none, so a caller cannot tell another user's from a missing one.

        Raises:
            ConflictError: two different inputs hashes share the prefix.
        """
        if not re.fullmatch(r"[0-9a-f]{1,64}", hash_prefix):
            return None
        query = select(proposals).where(
            proposals.c.capability == capability, proposals.c.inputs_hash.startswith(hash_prefix)
        )
        if user is not None:
            query = query.where(proposals.c.user == user)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(proposals.c.id.desc())).all()
        if not rows:
            return None
        if len({r.inputs_hash for r in rows}) > 1:
            raise ConflictError(
                f"more than one recorded result of {capability} has an inputs hash starting with "
                f"{hash_prefix}; pass the trades instead",
                details={"capability": capability, "hash_prefix": hash_prefix},
            )
        r = rows[0]
        return {
            "id": r.id,
            "capability": r.capability,
            "portfolio_id": r.portfolio_id,
            "pricing_pack_id": r.pricing_pack_id,
            "policy_id": r.policy_id,
            "inputs_hash": r.inputs_hash,
            "user": r.user,
            "result": json.loads(r.result_json),
        }

    def record_proposals(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append several results to the history in one transaction (``record_proposal``'s fields).

        For batches: one commit per result would make the disk's sync, not the work, the limit.
        """
        if not rows:
            return
        now = datetime.now(UTC)
        with write_transaction(self.engine) as conn:
            conn.execute(proposals.insert(), [{"created_at": now, **row} for row in rows])

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

    def get_proposal(self, proposal_id: int) -> dict[str, Any]:
        """One recorded result by id, as in ``list_proposals``.

        Raises:
            NotFoundError: no result with this id.
        """
        with self.engine.connect() as conn:
            r = conn.execute(select(proposals).where(proposals.c.id == proposal_id)).first()
        if r is None:
            raise NotFoundError(f"proposal {proposal_id} not found", details={"proposal_id": proposal_id})
        return {
            "id": r.id,
            "created_at": _utc(r.created_at).isoformat(),
            "capability": r.capability,
            "portfolio_id": r.portfolio_id,
            "pricing_pack_id": r.pricing_pack_id,
            "policy_id": r.policy_id,
            "inputs_hash": r.inputs_hash,
            "result_json": r.result_json,
        }

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
        with write_transaction(self.engine) as conn:
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
        with write_transaction(self.engine) as conn:
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

    # --- targets, portfolio versions and rebalance history ------------------------------------

    def put_target(
        self, portfolio_id: str, weights_pct: dict[str, float], *, policy_id: str | None, source: str
    ) -> int:
        """Store a new target version for a portfolio and return its number (1, 2, ...).

        Raises:
            NotFoundError: no such portfolio.
        """
        self.get_portfolio(portfolio_id)
        with write_transaction(self.engine) as conn:
            last = conn.execute(
                select(func.max(portfolio_targets.c.version)).where(
                    portfolio_targets.c.portfolio_id == portfolio_id
                )
            ).scalar_one()
            version = (last or 0) + 1
            conn.execute(
                portfolio_targets.insert().values(
                    portfolio_id=portfolio_id,
                    version=version,
                    policy_id=policy_id,
                    source=source,
                    weights_json=json.dumps(dict(sorted(weights_pct.items())), sort_keys=True),
                    created_at=datetime.now(UTC),
                )
            )
        return version

    def get_target(self, portfolio_id: str, version: int | None = None) -> dict[str, Any]:
        """A target (the latest unless ``version`` is given): version, policy_id, source, weights_pct.

        Raises:
            NotFoundError: the portfolio has no target (or not that version).
        """
        query = select(portfolio_targets).where(portfolio_targets.c.portfolio_id == portfolio_id)
        if version is not None:
            query = query.where(portfolio_targets.c.version == version)
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(portfolio_targets.c.version.desc()).limit(1)).first()
        if row is None:
            which = f"target version {version}" if version is not None else "target"
            raise NotFoundError(
                f"portfolio {portfolio_id!r} has no {which}; set one with "
                f"`optimizer targets set {portfolio_id} --weights FILE.csv`",
                details={"portfolio_id": portfolio_id, "version": version},
            )
        return _target_dict(row)

    def list_targets(self, portfolio_id: str) -> list[dict[str, Any]]:
        """Every target version of a portfolio, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(portfolio_targets)
                .where(portfolio_targets.c.portfolio_id == portfolio_id)
                .order_by(portfolio_targets.c.version)
            ).all()
        return [_target_dict(r) for r in rows]

    def portfolio_version(self, portfolio_id: str) -> int:
        """The current version number of a stored portfolio (1 until a rebalance is booked)."""
        with self.engine.connect() as conn:
            return _current_version(conn, portfolio_id)

    def get_portfolio_version(self, portfolio_id: str, version: int) -> Portfolio:
        """A portfolio as it was at ``version``; the current version is the stored portfolio.

        Raises:
            NotFoundError: no such portfolio or version.
        """
        current = self.get_portfolio(portfolio_id)
        with self.engine.connect() as conn:
            if version == _current_version(conn, portfolio_id):
                return current
            row = conn.execute(
                select(portfolio_versions).where(
                    portfolio_versions.c.portfolio_id == portfolio_id,
                    portfolio_versions.c.version == version,
                )
            ).first()
        if row is None:
            raise NotFoundError(
                f"portfolio {portfolio_id!r} has no version {version}; `optimizer history "
                f"{portfolio_id}` lists the versions booked",
                details={"portfolio_id": portfolio_id, "version": version},
            )
        return Portfolio(id=portfolio_id, cash=row.cash, lots=_lots_from_json(row.lots_json),
                         owner=current.owner)

    def book_rebalance(
        self, before: Portfolio, after: Portfolio | None, record: dict[str, Any]
    ) -> dict[str, Any]:
        """Record a rebalance; when ``after`` is given, it becomes the portfolio's new version.

        ``record`` holds status, run_id, pricing_pack_id, asof (a date), approved_by, note and the
        JSON-ready details (trades, costs, weights, policy). Everything is one transaction: the
        old version is kept, the lots and cash replaced and the history row written together, or
        nothing is. ``before`` must be the stored portfolio as it is now (checked), so two
        bookings against the same version cannot both succeed.

        Raises:
            ConflictError: the stored portfolio changed since ``before`` was read.
        """
        with write_transaction(self.engine) as conn:
            version = _current_version(conn, before.id)
            stored = _read_lots(conn, before.id)
            cash = conn.execute(
                select(portfolios.c.cash).where(portfolios.c.id == before.id)
            ).scalar_one()
            if cash != before.cash or stored != list(before.lots):
                raise ConflictError(
                    f"portfolio {before.id} changed since the trades were proposed (now version "
                    f"{version}); propose again against the current holdings",
                    details={"portfolio_id": before.id, "version": version},
                )
            kept = conn.execute(
                select(portfolio_versions.c.cash, portfolio_versions.c.lots_json).where(
                    portfolio_versions.c.portfolio_id == before.id,
                    portfolio_versions.c.version == version,
                )
            ).first()
            if kept is not None and (kept.cash != before.cash or kept.lots_json != _lots_json(before)):
                # Replaced since its last booking (re-imported): the holdings are a version of their own.
                version += 1
            now = datetime.now(UTC)
            row = {
                "portfolio_id": before.id,
                "status": record["status"],
                "run_id": record.get("run_id"),
                "pricing_pack_id": record["pricing_pack_id"],
                "asof": record["asof"],
                "version_before": version,
                "version_after": version + 1 if after is not None else None,
                "approved_by": record.get("approved_by"),
                "note": record.get("note"),
                "record_json": json.dumps(record["details"], sort_keys=True),
                "created_at": now,
            }
            rebalance_id = int(conn.execute(rebalances.insert().values(**row)).inserted_primary_key[0])
            if after is not None:
                _keep_version(conn, before, version, rebalance_id, now)
                _replace_holdings(conn, after)
                _keep_version(conn, after, version + 1, rebalance_id, now)
        return {**row, "id": rebalance_id}

    def list_rebalances(
        self, portfolio_id: str | None = None, *, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Rebalance history rows (booked and rejected), oldest first, details decoded."""
        query = select(rebalances).order_by(rebalances.c.id)
        if portfolio_id is not None:
            query = query.where(rebalances.c.portfolio_id == portfolio_id)
        if run_id is not None:
            query = query.where(rebalances.c.run_id == run_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "id": r.id,
                "portfolio_id": r.portfolio_id,
                "status": r.status,
                "run_id": r.run_id,
                "pricing_pack_id": r.pricing_pack_id,
                "asof": r.asof.isoformat(),
                "version_before": r.version_before,
                "version_after": r.version_after,
                "approved_by": r.approved_by,
                "note": r.note,
                "created_at": _utc(r.created_at).isoformat(),
                **json.loads(r.record_json),
            }
            for r in rows
        ]

    def set_restrictions(self, portfolio_id: str, *, restricted: list[str], frozen: list[str]) -> None:
        """Replace a portfolio's trading restrictions (a symbol may not be both).

        Raises:
            NotFoundError: no such portfolio.
            InputError: a symbol is both restricted and frozen.
        """
        self.get_portfolio(portfolio_id)
        both = sorted(set(restricted) & set(frozen))
        if both:
            raise InputError(
                f"restrictions: {', '.join(both)} cannot be both restricted and frozen (frozen already "
                "means never traded)",
                details={"field": "restrictions", "both": both},
            )
        with write_transaction(self.engine) as conn:
            _replace_restrictions(conn, portfolio_id, restricted, frozen)

    def get_restrictions(self, portfolio_id: str) -> dict[str, list[str]]:
        """A portfolio's restrictions: {"restricted": [...], "frozen": [...]}, symbols sorted."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(portfolio_restrictions.c.symbol, portfolio_restrictions.c.kind)
                .where(portfolio_restrictions.c.portfolio_id == portfolio_id)
                .order_by(portfolio_restrictions.c.symbol)
            ).all()
        return {kind: [r.symbol for r in rows if r.kind == kind] for kind in ("restricted", "frozen")}

    def put_preferences(
        self, portfolio_id: str, preferences: dict[str, Any], *, changed_by: str | None
    ) -> int:
        """Store a portfolio's rebalancing preferences as their next version (1, 2, ...).

        ``preferences`` is the whole validated set; its ``restricted_symbols`` and
        ``frozen_symbols`` replace the portfolio's restrictions in the same transaction.

        Raises:
            NotFoundError: no such portfolio.
        """
        self.check_portfolio_access(portfolio_id, user=None)
        with write_transaction(self.engine) as conn:
            last = conn.execute(
                select(func.max(portfolio_preferences.c.version)).where(
                    portfolio_preferences.c.portfolio_id == portfolio_id
                )
            ).scalar_one()
            version = (last or 0) + 1
            conn.execute(
                portfolio_preferences.insert().values(
                    portfolio_id=portfolio_id,
                    version=version,
                    preferences_json=json.dumps(preferences, sort_keys=True),
                    changed_by=changed_by,
                    created_at=datetime.now(UTC),
                )
            )
            _replace_restrictions(conn, portfolio_id, preferences["restricted_symbols"],
                                  preferences["frozen_symbols"])
        return version

    def get_preferences(self, portfolio_id: str) -> dict[str, Any] | None:
        """The latest preferences version of a portfolio ({version, preferences, changed_by,
        changed_at}), or None when none was ever stored."""
        found = self._preference_rows(portfolio_id, latest=True)
        return found[0] if found else None

    def list_preferences(self, portfolio_id: str) -> list[dict[str, Any]]:
        """Every preferences version of a portfolio, oldest first."""
        return self._preference_rows(portfolio_id, latest=False)

    def _preference_rows(self, portfolio_id: str, *, latest: bool) -> list[dict[str, Any]]:
        query = select(portfolio_preferences).where(portfolio_preferences.c.portfolio_id == portfolio_id)
        if latest:
            query = query.order_by(portfolio_preferences.c.version.desc()).limit(1)
        else:
            query = query.order_by(portfolio_preferences.c.version)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {"version": r.version, "preferences": json.loads(r.preferences_json), "changed_by": r.changed_by,
             "changed_at": _utc(r.created_at).isoformat()}
            for r in rows
        ]

    def last_booked_asof(self, portfolio_id: str) -> date | None:
        """The pack date of the portfolio's last booked rebalance, or None."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.max(rebalances.c.asof)).where(
                    rebalances.c.portfolio_id == portfolio_id, rebalances.c.status == "booked"
                )
            ).scalar_one()


def portfolio_not_found(portfolio_id: str) -> NotFoundError:
    """The one error for a portfolio that is missing or not the caller's (it lists nothing)."""
    return NotFoundError(
        f"portfolio {portfolio_id!r} not found; `optimizer portfolios list` shows the portfolios "
        "you can use",
        details={"field": "portfolio_id", "value": portfolio_id},
    )


# Storage faults a person can fix, by the database's own words (SQLite) or SQLSTATE (PostgreSQL).
_STORAGE_FAULTS = (
    (("attempt to write a readonly database", "25006"), "read_only_store",
     "the store is read-only: reading works, but this command writes; make the home directory "
     "and its database file writable (or use another --home) and run it again"),
    (("database or disk is full", "53100"), "store_full",
     "the store's disk is full; nothing was written: free some space and run the command again"),
    (("unable to open database file",), "store_unavailable",
     "the store cannot be opened for this operation: check that the home directory exists and "
     "that it and the database file are readable (and writable, for commands that write)"),
)


def translate_storage_errors(engine: Engine) -> None:
    """Turn a read-only or full store into a DomainError (exit 3) that quotes no SQL or data.

    Registered on the engine, so every statement of every store method is covered; anything
    else is left to propagate as it is.
    """

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        original = context.original_exception
        text = str(original).lower()
        state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
        for markers, code, message in _STORAGE_FAULTS:
            if (state is not None and state in markers) or any(m in text for m in markers):
                raise DomainError(message, code=code)


SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option: begin this transaction with BEGIN IMMEDIATE (writes) rather than BEGIN.
SQLITE_IMMEDIATE = "sqlite_immediate"


def _sqlite_path(database: str | None) -> str | None:
    """The file behind a SQLite URL's database part (a plain path or a ``file:`` URI), or None
    for an in-memory database."""
    if database in (None, "", ":memory:"):
        return None
    if database.startswith("file:"):
        path = database[len("file:"):].split("?", 1)[0]
        return None if path in ("", ":memory:") else path
    return database


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Automatic garbage collection off while rows are read in bulk, then as it was.

    A pack's rows are hundreds of thousands of tuples of text and floats, which can hold no
    reference cycle; collections triggered as they pile up walked the whole heap for nothing
    (0.3-0.6 s of a 500-asset pack's 2 s read).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes: committed at the end, rolled back on error.

    On SQLite it begins with ``BEGIN IMMEDIATE`` (see ``_configure_sqlite``); elsewhere it is
    ``engine.begin()``.
    """
    with engine.connect() as conn:
        conn.execution_options(**{SQLITE_IMMEDIATE: True})
        with conn.begin():
            yield conn


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
        # A write transaction takes the write lock up front: a deferred one that read first is
        # refused at once ("database is locked", no busy wait) when another connection, such as
        # the run checkpointer's, wrote in between.
        immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _check_pack(pack: PricingPack) -> None:
    """Refuse a pack whose frame would not read back identically.

    Only closes are stored (no NaN), so a date or symbol with no close at all would vanish on
    the way back and the hash would no longer match; every priced symbol must also be in the
    pack's own security master.
    """
    import numpy as np

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


def _replace_restrictions(conn: Connection, portfolio_id: str, restricted: list[str], frozen: list[str]) -> None:
    rows = [{"portfolio_id": portfolio_id, "symbol": s, "kind": "restricted"} for s in sorted(set(restricted))]
    rows += [{"portfolio_id": portfolio_id, "symbol": s, "kind": "frozen"} for s in sorted(set(frozen))]
    conn.execute(delete(portfolio_restrictions).where(portfolio_restrictions.c.portfolio_id == portfolio_id))
    if rows:
        conn.execute(portfolio_restrictions.insert(), rows)


def _target_dict(row: Any) -> dict[str, Any]:
    return {
        "portfolio_id": row.portfolio_id,
        "version": row.version,
        "policy_id": row.policy_id,
        "source": row.source,
        "weights_pct": json.loads(row.weights_json),
        "created_at": _utc(row.created_at).isoformat(),
    }


def _current_version(conn: Connection, portfolio_id: str) -> int:
    last = conn.execute(
        select(func.max(portfolio_versions.c.version)).where(
            portfolio_versions.c.portfolio_id == portfolio_id
        )
    ).scalar_one()
    return last or 1


def _check_usable(head: Any, portfolio_id: str, user: str | None) -> None:
    """A portfolio row is usable by its owner; the local operator (``user=None``) uses any."""
    if head is None or (user is not None and head.owner != user):
        raise portfolio_not_found(portfolio_id)


def _read_lots(conn: Connection, portfolio_id: str) -> list[Lot]:
    rows = conn.execute(
        select(lots.c.symbol, lots.c.shares, lots.c.cost_basis, lots.c.acquired)
        .where(lots.c.portfolio_id == portfolio_id)
        .order_by(lots.c.lot_no)
    ).all()
    return [Lot(symbol=r.symbol, shares=r.shares, cost_basis=r.cost_basis, acquired=r.acquired) for r in rows]


def _lots_json(portfolio: Portfolio) -> str:
    return json.dumps([lot.to_json() for lot in portfolio.lots])


def _lots_from_json(text: str) -> tuple[Lot, ...]:
    return tuple(Lot.from_json(item) for item in json.loads(text))


def _keep_version(
    conn: Connection, portfolio: Portfolio, version: int, rebalance_id: int, now: datetime
) -> None:
    """Write ``portfolio`` as ``version`` unless that version is already kept."""
    exists = conn.execute(
        select(portfolio_versions.c.version).where(
            portfolio_versions.c.portfolio_id == portfolio.id,
            portfolio_versions.c.version == version,
        )
    ).first()
    if exists is None:
        conn.execute(
            portfolio_versions.insert().values(
                portfolio_id=portfolio.id,
                version=version,
                cash=portfolio.cash,
                lots_json=_lots_json(portfolio),
                # The first version predates any rebalance.
                rebalance_id=rebalance_id if version > 1 else None,
                created_at=now,
            )
        )


def _replace_holdings(conn: Connection, portfolio: Portfolio) -> None:
    """The stored cash and lots become ``portfolio``'s (lots renumbered 1..)."""
    conn.execute(portfolios.update().where(portfolios.c.id == portfolio.id).values(cash=portfolio.cash))
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


def _utc(value: datetime) -> datetime:
    # SQLite keeps no offset; everything is written in UTC, so a naive value read back is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
