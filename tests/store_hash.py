"""A fingerprint of every table of a store, to show that a failed command wrote nothing."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from services.data.store import Store, metadata


def table_hashes(store: Store) -> dict[str, str]:
    """SHA-256 of each table's rows, read in primary-key order (every column, every row)."""
    out: dict[str, str] = {}
    with store.engine.connect() as conn:
        for name, table in sorted(metadata.tables.items()):
            order = list(table.primary_key.columns) or list(table.columns)
            digest = hashlib.sha256()
            for row in conn.execute(select(table).order_by(*order)):
                digest.update(repr(tuple(row)).encode())
            out[name] = digest.hexdigest()
    return out
