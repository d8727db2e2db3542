"""The record of pattern runs: one row a run, beside the LangGraph checkpoints in ``<home>/runs.db``.

The row keeps what a person asks about a run (pattern, status, who started it, when, inputs,
the last report) and the pattern document it started with, so a run resumes with the pattern
it began with even if the file has changed since. Documents and reports keep their key order,
so a resumed run and ``optimizer runs show`` read like the original report. Timestamps live
here, never in reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
    update,
)

from services.errors import ConflictError

STATUSES = ("running", "waiting_for_approval", "completed", "rejected", "failed")

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
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RunLog:
    """Pattern runs in a SQLite file (SQLAlchemy Core); the clock is injectable for tests."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = _utc_now):
        self.engine = create_engine(f"sqlite:///{path}")
        self._clock = clock
        metadata.create_all(self.engine, checkfirst=True)

    def create(
        self,
        run_id: str,
        pattern_document: dict[str, Any],
        user: str | None,
        inputs: dict[str, Any],
    ) -> None:
        """Record a new run as ``running``.

        Raises:
            ConflictError: a run with this id exists already.
        """
        now = self._clock()
        with self.engine.begin() as conn:
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
                )
            )

    def update(
        self,
        run_id: str,
        status: str,
        *,
        report: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Set a run's status and, when given, its latest report or its error."""
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; one of {', '.join(STATUSES)}")
        values: dict[str, Any] = {"status": status, "updated_at": self._clock()}
        if report is not None:
            values["report"] = json.dumps(report)
        if error is not None:
            values["error"] = json.dumps(error, sort_keys=True)
        with self.engine.begin() as conn:
            conn.execute(
                update(pattern_runs).where(pattern_runs.c.run_id == run_id).values(**values)
            )

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


def _decode(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("pattern_document", "inputs", "report", "error"):
        if key in out and out[key] is not None:
            out[key] = json.loads(out[key])
    for key in ("created_at", "updated_at"):
        # SQLite returns naive datetimes; they were written in UTC.
        out[key] = out[key].replace(tzinfo=UTC).isoformat()
    return out
