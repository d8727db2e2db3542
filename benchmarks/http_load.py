"""What the HTTP load test and the HTTP benchmark share: the request mix they send
(propose_trades calls, reads and pattern runs, every computation distinct so that none is served
from the result cache: a cached result says so in its metadata, which would differ between two
orders of arrival), and a throwaway PostgreSQL database to run a server on."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx
from sqlalchemy import create_engine, make_url

PACK = "PP_2022-12-28"
PORTFOLIOS = ("demo_concentrated", "demo_diversified", "demo_quality")
REGIMES = ("DELEVERAGING", "LATE_EXPANSION", "REFLATION")
READS = ("/v1/packs", "/v1/portfolios", "/v1/policies", "/v1/policies/quality_focused",
         "/v1/capabilities")


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None


def request_mix(total: int = 200) -> list[Call]:
    """``total`` calls: 24 propose_trades, 12 optimizations, 6 runs, the rest reads, interleaved."""
    heavy: list[Call] = []
    for i in range(24):
        request = {"portfolio_id": PORTFOLIOS[i % 3], "pricing_pack_id": PACK,
                   "policy": {"method": "min_variance", "max_single_position_pct": 40.0 + i}}
        heavy.append(Call("POST", "/v1/execute",
                          {"capability": "optimizer.propose_trades", "request": request}))
    for i in range(12):
        heavy.append(Call("POST", "/api/v1/optimize", {
            "portfolio_id": PORTFOLIOS[i % 3], "method": "RISK_PARITY",
            "constraints": {"max_weight": round(0.5 + i / 100, 2)}}))
    for i in range(6):
        heavy.append(Call("POST", "/v1/runs", {"pattern": "regime_response", "inputs": {
            "portfolio_id": PORTFOLIOS[i % 3], "pricing_pack_id": PACK, "regime": REGIMES[i // 2]}}))
    reads = iter(Call("GET", READS[i % len(READS)]) for i in range(total - len(heavy)))
    spread = {j * total // len(heavy): call for j, call in enumerate(heavy)}
    calls = [spread[i] if i in spread else next(reads) for i in range(total)]
    assert len(calls) == total
    return calls


def send(client: httpx.Client, call: Call) -> tuple[int, bytes]:
    response = client.request(call.method, call.path, json=call.body)
    return response.status_code, response.content


def run_load(base_url: str, key: str, calls: Sequence[Call], clients: int) -> list[tuple[int, bytes]]:
    """Send ``calls`` from ``clients`` concurrent clients (each its own connection); in call order."""
    headers = {"Authorization": f"Bearer {key}"}
    pool = [httpx.Client(base_url=base_url, headers=headers, timeout=600) for _ in range(clients)]
    try:
        with ThreadPoolExecutor(clients) as executor:
            return list(executor.map(lambda ic: send(pool[ic[0] % clients], ic[1]), enumerate(calls)))
    finally:
        for c in pool:
            c.close()


def comparable(call: Call, content: bytes) -> bytes:
    """The response with the two things that differ by design removed: a run's random id and
    an optimization's wall-clock ``optimization_time_ms``."""
    if call.path == "/v1/runs":
        value = json.loads(content)
        return content.replace(value["run_id"].encode(), b"RUN_ID")
    if call.path == "/api/v1/optimize":
        value = json.loads(content)
        value["optimization_metadata"].pop("optimization_time_ms", None)
        return json.dumps(value, sort_keys=True, indent=2).encode()
    return content


@contextmanager
def throwaway_postgres_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database ``<prefix>_<random>`` on the server at ``server_url``, dropped
    afterwards (connections and all); yields its SQLAlchemy URL."""
    server = make_url(server_url)
    name = f"{prefix}_{uuid4().hex[:16]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
