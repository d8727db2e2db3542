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
    or_,
    select,
    update,
)

from services.data.store import write_transaction
from services.errors import ConflictError

STATUSES = ("running", "waiting_for_approval", "completed", "rejected", "failed", "cancelled")
FINAL_STATUSES = ("completed", "rejected", "failed", "cancelled")
# How long a driver's claim on a running run lasts without renewal; drivers renew every third.
# $OPTIMIZER_RUN_LEASE_SECONDS shortens it (the crash tests use 2 s).
LEASE_ENV = "OPTIMIZER_RUN_LEASE_SECONDS"
LEASE = timedelta(seconds=float(os.environ.get(LEASE_ENV) or 30))

metadata = MetaData()

pattern_runs = Table(
    "pattern_runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
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
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RunLog:
    """Pattern runs in the store's database (SQLAlchemy Core); the clock is injectable for tests."""

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
    ) -> None:
        """Record a new run as ``running``, leased to ``lease_owner``.

        Raises:
            ConflictError: a run with this id exists already.
        """
        now = self._clock()
        with write_transaction(self.engine) as conn:
            if conn.execute(
                select(pattern_runs.c.run_id).where(pattern_runs.c.run_id == run_id)
            ).first():
                raise ConflictError(
                    f"run '{run_id}' exists already; choose another run id or resume it with "
                    f"`optimizer resume {run_id}`",
                    details={"field": "run_id", "value": run_id},
                )
            conn.execute(
                pattern_runs.insert().values(
                    run_id=run_id,
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

    def claim_decision(self, run_id: str, decision: dict[str, Any], lease_owner: str) -> bool:
        """Record ``decision`` and lease the run to ``lease_owner`` if it still waits at a gate.

        Returns False when another caller decided first (or the run no longer waits).
        """
        now = self._clock()
        return self._update_if(
            run_id,
            pattern_runs.c.status == "waiting_for_approval",
            status="running",
            decision=json.dumps(decision, sort_keys=True),
            lease_owner=lease_owner,
            lease_expires_at=now + LEASE,
            updated_at=now,
        )

    def claim_orphan(self, run_id: str, lease_owner: str) -> bool:
        """Take over a ``running`` run whose lease has lapsed; False if it is not orphaned."""
        now = self._clock()
        return self._update_if(
            run_id, _orphaned(now), lease_owner=lease_owner, lease_expires_at=now + LEASE, updated_at=now
        )

    def renew(self, run_id: str, lease_owner: str) -> bool:
        """Extend ``lease_owner``'s lease on a running run; False if it no longer holds it."""
        return self._update_if(run_id, _held_by(lease_owner), lease_expires_at=self._clock() + LEASE)

    def finish(
        self,
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
        return self._update_if(run_id, _held_by(lease_owner), **values)

    def cancel(self, run_id: str, by: str | None) -> bool:
        """Cancel a run that waits at a gate or is running; False if it had already ended."""
        return self._update_if(
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

    def _update_if(self, run_id: str, condition: Any, **values: Any) -> bool:
        """Compare-and-set: write ``values`` to the run if ``condition`` holds; whether it did."""
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(pattern_runs)
                .where(pattern_runs.c.run_id == run_id, condition)
                .values(**values)
            ).rowcount
        return bool(done)

    def orphans(self) -> list[str]:
        """Ids of running runs whose lease has lapsed, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(pattern_runs.c.run_id)
                .where(_orphaned(self._clock()))
                .order_by(pattern_runs.c.created_at, pattern_runs.c.run_id)
            ).all()
        return [r.run_id for r in rows]

    def is_orphaned(self, row: dict[str, Any]) -> bool:
        """Whether a decoded row is a running run whose lease has lapsed."""
        if row["status"] != "running":
            return False
        expires = row.get("lease_expires_at")
        return expires is None or datetime.fromisoformat(expires) < self._clock()

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run with its pattern document, inputs, report and error decoded; None if unknown."""
        with self.engine.connect() as conn:
            row = conn.execute(select(pattern_runs).where(pattern_runs.c.run_id == run_id)).first()
        return None if row is None else _decode(row._mapping)

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
        ).order_by(pattern_runs.c.created_at.desc(), pattern_runs.c.run_id)
        if user is not None:
            query = query.where(pattern_runs.c.user == user)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [_decode(r._mapping) for r in rows]


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
    out.pop("lease_owner", None)
    return out
