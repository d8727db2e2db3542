"""Load: 200 requests from 16 concurrent clients against one real server, on SQLite and on
PostgreSQL: no 5xx, no lost or duplicated history rows, every response byte-identical to the
same request sent sequentially to a fresh server. (Requests per second: benchmarks/bench_http.py.)"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from serving import Server, add_user, seeded_environment
from sqlalchemy import create_engine, text

from benchmarks.http_load import comparable, request_mix, run_load


@contextmanager
def fresh_server(directory: Path, backend: str) -> Iterator[tuple[Server, str, str]]:
    """A seeded store and a server on it: (server, demo's key, the store's URL)."""
    with ExitStack() as stack:
        env, url = stack.enter_context(seeded_environment(directory, backend))
        key = add_user("demo", env)
        server = Server(env)
        stack.callback(server.stop)
        yield server, key, url


def history(url: str) -> Counter[tuple[str, str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT capability, inputs_hash, result_json FROM proposals")).all()
    finally:
        engine.dispose()
    return Counter((r[0], r[1], timeless(r[2])) for r in rows)


def timeless(result_json: str) -> str:
    """A recorded result without an optimization's wall-clock time (the one figure that varies)."""
    value = json.loads(result_json)
    value.get("optimization_metadata", {}).pop("optimization_time_ms", None)
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_hundred_requests_from_sixteen_clients(backend: str, tmp_path: Path) -> None:
    calls = request_mix(200)
    with fresh_server(tmp_path / "sequential", backend) as (server, key, url):
        sequential = run_load(server.url, key, calls, clients=1)
        sequential_history = history(url)
    with fresh_server(tmp_path / "concurrent", backend) as (server, key, url):
        concurrent = run_load(server.url, key, calls, clients=16)
        concurrent_history = history(url)
    assert [s for s, _ in concurrent if s >= 500] == []
    assert [s for s, _ in sequential] == [s for s, _ in concurrent]
    refused = [(call, body[:300]) for call, (s, body) in zip(calls, concurrent, strict=True) if s >= 400]
    assert refused == []
    for call, (_, seq), (_, con) in zip(calls, sequential, concurrent, strict=True):
        assert comparable(call, con) == comparable(call, seq), call
    # Every computation recorded exactly once: 24 + 12 proposals and 12 optimizations.
    assert concurrent_history == sequential_history
    assert sum(concurrent_history.values()) == 48 and max(concurrent_history.values()) == 1
