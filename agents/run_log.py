"""The record of pattern runs: one row a run, in the store's database beside the LangGraph
checkpoints.

The row keeps what a person asks about a run (pattern, status, who started it, when, inputs,
the last report) and the pattern document it started with, so a run resumes with the pattern
it began with even if the file has changed since. Documents and reports keep their key order,
so a resumed run and ``optimizer runs show`` read like the original report. Timestamps live
here, never in reports.

Two kinds of race are decided here, each by one conditional UPDATE (a compare-and-set the
database arbitrates, on SQLite and PostgreSQL alike):

- a decision on a gate: only the caller whose UPDATE moves the run from
  ``waiting_for_approval`` to ``running`` may resume it; the other learns the decision taken;
- who drives a running run: the driver holds a lease (``lease_owner``, ``lease_expires_at``)
  and renews it while it works. A run whose lease has lapsed was orphaned (its process died)
  and may be claimed by ``recover``. Writes from a driver that lost its lease (the run was
  cancelled or recovered meanwhile) change nothing.

Run ids are scoped per user: a run is keyed by (``scope``, ``run_id``), ``scope`` being its
user's name or ``""`` for the local operator, so a run id bob chooses never tells him that
alice uses it too. Its LangGraph checkpoints live under ``thread_id`` = ``"<scope>/<run_id>"``
(user names and run ids hold no ``/``, so two runs never share a thread); runs recorded before
the scoping keep their thread id (the bare run id, which has no ``/`` and so meets no new one).
``migrate`` rebuilds a store's older ``pattern_runs`` table into this form.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    inspect,
    literal,
    or_,
    select,
    update,
)

from services.data.store import Store, write_transaction
from services.errors import ConflictError

STATUSES = ("running", "waiting_for_approval", "completed", "rejected", "failed", "cancelled")
FINAL_STATUSES = ("completed", "rejected", "failed", "cancelled")
# How long a driver's claim on a running run lasts without renewal; drivers renew every third.
# $OPTIMIZER_RUN_LEASE_SECONDS shortens it (the crash tests use 2 s).
LEASE_ENV = "OPTIMIZER_RUN_LEASE_SECONDS"
LEASE = timedelta(seconds=float(os.environ.get(LEASE_ENV) or 30))

metadata = MetaData()
# The local operator's scope: user names are never empty (``check_user_name``).
OPERATOR_SCOPE = ""


def _columns() -> list[Column[Any]]:
    return [
        Column("scope", String(128), primary_key=True),
        Column("run_id", String(128), primary_key=True),
        # LangGraph's checkpoint thread of the run (see the module's docstring).
        Column("thread_id", String(300), nullable=False),
        Column("pattern_id", String(64), nullable=False),
        Column("pattern_version", String(32), nullable=False),
        Column("pattern_document", Text, nullable=False),
        Column("user", String(128), nullable=True),
        Column("status", String(32), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("inputs", Text, nullable=False),
        Column("report", Text, nullable=True),
        Column("error", Text, nullable=True),
        # The last decision taken on a gate: {gate, approved, note, by}.
        Column("decision", Text, nullable=True),
        Column("lease_owner", String(64), nullable=True),
        Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    ]


pattern_runs = Table("pattern_runs", metadata, *_columns())


def scope_of(user: str | None) -> str:
    """The scope of ``user``'s run ids: their name, or ``OPERATOR_SCOPE`` for the operator."""
    return OPERATOR_SCOPE if user is None else user


def thread_id_of(user: str | None, run_id: str) -> str:
    """The LangGraph thread of a new run of ``user``: distinct for every (user, run id)."""
    return f"{scope_of(user)}/{run_id}"


def setup(store: Store) -> None:
    """Create the run tables on ``store``'s database and migrate older ones, under its setup lock."""
    with store.exclusive():
        store.create_schema(metadata)
        migrate(store.engine)


def migrate(engine: Engine) -> bool:
    """Rebuild a ``pattern_runs`` table recorded before run ids were scoped per user.

    The old table was keyed by ``run_id`` alone and had no ``scope`` nor ``thread_id``: every
    row is copied with ``scope`` = its user (``""`` for the operator) and ``thread_id`` = its run
    id (where LangGraph keeps its checkpoints), in one transaction (SQLite and PostgreSQL both
    have transactional DDL: a failure leaves the old table). Call it under the store's setup
    lock. Returns whether a table was rebuilt.
    """
    if "scope" in {c["name"] for c in inspect(engine).get_columns(pattern_runs.name)}:
        return False
    old = Table(pattern_runs.name, MetaData(), *(c for c in _columns() if c.name not in ("scope", "thread_id")))
    new = Table(f"{pattern_runs.name}_scoped", MetaData(), *_columns())
    kept = [c.name for c in old.columns]
    with write_transaction(engine) as conn:
        new.create(conn)
        conn.execute(
            new.insert().from_select(
                ["scope", "thread_id", *kept],
                select(
                    func.coalesce(old.c.user, literal(OPERATOR_SCOPE)),
                    old.c.run_id,
                    *(old.c[name] for name in kept),
                ),
            )
        )
        old.drop(conn)
        quote = engine.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"ALTER TABLE {quote(new.name)} RENAME TO {quote(pattern_runs.name)}")
    return True


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RunLog:
    """Pattern runs in the store's database (SQLAlchemy Core); the clock is injectable for tests.

    A run is named by its user (None: the local operator) and its run id; the same run id may
    name one run of each user.
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utc_now):
        self.engine = engine  # writes go through write_transaction (see services.data.store)
        self._clock = clock

    def create(
        self,
        run_id: str,
        pattern_document: dict[str, Any],
        user: str | None,
        inputs: dict[str, Any],
        lease_owner: str,
    ) -> str:
        """Record a new run of ``user`` as ``running``, leased to ``lease_owner``; its thread id.

        Raises:
            ConflictError: ``user`` has a run with this id already (another user's runs never
                conflict: run ids are scoped per user).
        """
        now = self._clock()
        thread_id = thread_id_of(user, run_id)
        with write_transaction(self.engine) as conn:
            if conn.execute(select(pattern_runs.c.run_id).where(_key(user, run_id))).first():
                raise ConflictError(
                    f"run '{run_id}' exists already; choose another run id or resume it with "
                    f"`optimizer resume {run_id}`",
                    details={"field": "run_id", "value": run_id},
                )
            conn.execute(
                pattern_runs.insert().values(
                    scope=scope_of(user),
                    run_id=run_id,
                    thread_id=thread_id,
                    pattern_id=pattern_document["id"],
                    pattern_version=pattern_document["version"],
                    pattern_document=json.dumps(pattern_document),
                    user=user,
                    status="running",
                    created_at=now,
                    updated_at=now,
                    inputs=json.dumps(inputs, sort_keys=True),
                    lease_owner=lease_owner,
                    lease_expires_at=now + LEASE,
                )
            )
        return thread_id

    def claim_decision(
        self, user: str | None, run_id: str, decision: dict[str, Any], lease_owner: str
    ) -> bool:
        """Record ``decision`` and lease the run to ``lease_owner`` if it still waits at a gate.

        Returns False when another caller decided first (or the run no longer waits).
        """
        now = self._clock()
        return self._update_if(
            user,
            run_id,
            pattern_runs.c.status == "waiting_for_approval",
            status="running",
            decision=json.dumps(decision, sort_keys=True),
            lease_owner=lease_owner,
            lease_expires_at=now + LEASE,
            updated_at=now,
        )

    def claim_orphan(self, user: str | None, run_id: str, lease_owner: str) -> bool:
        """Take over a ``running`` run whose lease has lapsed; False if it is not orphaned."""
        now = self._clock()
        return self._update_if(
            user, run_id, _orphaned(now), lease_owner=lease_owner, lease_expires_at=now + LEASE, updated_at=now
        )

    def renew(self, user: str | None, run_id: str, lease_owner: str) -> bool:
        """Extend ``lease_owner``'s lease on a running run; False if it no longer holds it."""
        return self._update_if(user, run_id, _held_by(lease_owner), lease_expires_at=self._clock() + LEASE)

    def finish(
        self,
        user: str | None,
        run_id: str,
        status: str,
        lease_owner: str,
        *,
        report: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Set a running run's outcome and release the lease, if ``lease_owner`` still holds it.

        Returns False (and writes nothing) when the run was cancelled or taken over meanwhile.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; one of {', '.join(STATUSES)}")
        values: dict[str, Any] = {
            "status": status,
            "updated_at": self._clock(),
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if report is not None:
            values["report"] = json.dumps(report)
        if error is not None:
            values["error"] = json.dumps(error, sort_keys=True)
        return self._update_if(user, run_id, _held_by(lease_owner), **values)

    def cancel(self, user: str | None, run_id: str, by: str | None) -> bool:
        """Cancel a run that waits at a gate or is running; False if it had already ended."""
        return self._update_if(
            user,
            run_id,
            pattern_runs.c.status.in_(("running", "waiting_for_approval")),
            status="cancelled",
            error=json.dumps(
                {"code": "cancelled", "message": f"cancelled by {by or 'the operator'}"}, sort_keys=True
            ),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=self._clock(),
        )

    def _update_if(self, user: str | None, run_id: str, condition: Any, **values: Any) -> bool:
        """Compare-and-set: write ``values`` to the run if ``condition`` holds; whether it did."""
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(pattern_runs).where(_key(user, run_id), condition).values(**values)
            ).rowcount
        return bool(done)

    def orphans(self) -> list[tuple[str | None, str]]:
        """(user, run id) of running runs whose lease has lapsed, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(pattern_runs.c.user, pattern_runs.c.run_id)
                .where(_orphaned(self._clock()))
                .order_by(pattern_runs.c.created_at, pattern_runs.c.scope, pattern_runs.c.run_id)
            ).all()
        return [(r.user, r.run_id) for r in rows]

    def is_orphaned(self, row: dict[str, Any]) -> bool:
        """Whether a decoded row is a running run whose lease has lapsed."""
        if row["status"] != "running":
            return False
        expires = row.get("lease_expires_at")
        return expires is None or datetime.fromisoformat(expires) < self._clock()

    def get(self, user: str | None, run_id: str) -> dict[str, Any] | None:
        """``user``'s run ``run_id`` with its pattern document, inputs, report, error and thread id
        decoded; None if ``user`` has no such run."""
        with self.engine.connect() as conn:
            row = conn.execute(select(pattern_runs).where(_key(user, run_id))).first()
        return None if row is None else _decode(row._mapping)

    def users_of(self, run_id: str) -> list[str | None]:
        """Every user with a run ``run_id`` (None: the operator), the operator first then by name.

        For the operator only, who may see every run.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(pattern_runs.c.user)
                .where(pattern_runs.c.run_id == run_id)
                .order_by(pattern_runs.c.scope)
            ).all()
        return [r.user for r in rows]

    def list(self, user: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs first (without documents and reports).

        A named user sees only the runs they started: a run started by the local operator may
        concern portfolios that user cannot read.
        """
        query = select(
            pattern_runs.c.run_id,
            pattern_runs.c.pattern_id,
            pattern_runs.c.pattern_version,
            pattern_runs.c.user,
            pattern_runs.c.status,
            pattern_runs.c.created_at,
            pattern_runs.c.updated_at,
        ).order_by(pattern_runs.c.created_at.desc(), pattern_runs.c.scope, pattern_runs.c.run_id)
        if user is not None:
            query = query.where(pattern_runs.c.scope == scope_of(user))
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [_decode(r._mapping) for r in rows]


def _key(user: str | None, run_id: str) -> Any:
    """The row of ``user``'s run ``run_id``."""
    return (pattern_runs.c.scope == scope_of(user)) & (pattern_runs.c.run_id == run_id)


def _held_by(lease_owner: str) -> Any:
    """The run is running under ``lease_owner``'s lease."""
    return (pattern_runs.c.status == "running") & (pattern_runs.c.lease_owner == lease_owner)


def _orphaned(now: datetime) -> Any:
    return and_(
        pattern_runs.c.status == "running",
        or_(pattern_runs.c.lease_expires_at.is_(None), pattern_runs.c.lease_expires_at < now),
    )


def _decode(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("pattern_document", "inputs", "report", "error", "decision"):
        if key in out and out[key] is not None:
            out[key] = json.loads(out[key])
    for key in ("created_at", "updated_at", "lease_expires_at"):
        if out.get(key) is not None:
            # SQLite returns naive datetimes; they were written in UTC.
            value = out[key]
            out[key] = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    for key in ("lease_owner", "scope"):
        out.pop(key, None)
    return out
