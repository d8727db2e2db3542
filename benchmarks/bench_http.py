"""Requests per second of ``optimizer serve`` on SQLite and PostgreSQL.

Starts a real server (uvicorn, one worker unless ``--workers``) on a freshly seeded store, sends
the load test's mix (``benchmarks.http_load.request_mix``: propose_trades, optimizations, runs
and reads, none served from the cache) from 1 and from 16 concurrent clients, then 1,000 reads
from 16 clients, and reports requests per second for each. PostgreSQL is measured when
``$OPTIMIZER_TEST_PG_URL`` names a server it may create a database on (``.ci/postgres start``).

    python -m benchmarks.bench_http --json benchmarks/results/http-2026-11-26.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.http_load import READS, Call, request_mix, run_load, throwaway_postgres_database

REPO = Path(__file__).resolve().parents[1]


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "agents.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


@contextmanager
def _server(backend: str, workers: int) -> Iterator[tuple[str, str]]:
    """A seeded store and a server on it: (base URL, an API key)."""
    with tempfile.TemporaryDirectory() as home, ExitStack() as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIMIZER_")}
        env["OPTIMIZER_HOME"] = home
        if backend == "postgresql":
            env["OPTIMIZER_DB_URL"] = stack.enter_context(
                throwaway_postgres_database(os.environ["OPTIMIZER_TEST_PG_URL"], "opt_bench"))
        _cli(env, "seed")
        key = _cli(env, "users", "add", "demo")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "serve", "--port", str(port), "--workers", str(workers)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            yield url, key
        finally:
            process.terminate()
            process.wait(timeout=60)


def _timed(url: str, key: str, calls: list[Call], clients: int) -> dict[str, Any]:
    started = time.perf_counter()
    responses = run_load(url, key, calls, clients)
    seconds = time.perf_counter() - started
    statuses = sorted({status for status, _ in responses})
    return {"requests": len(calls), "clients": clients, "seconds": round(seconds, 2),
            "requests_per_second": round(len(calls) / seconds, 1), "statuses": statuses}


def measure(backend: str, workers: int) -> dict[str, Any]:
    """The three scenarios on one backend, each on a fresh server and store."""
    out: dict[str, Any] = {}
    reads = [Call("GET", READS[i % len(READS)]) for i in range(1000)]
    for name, calls, clients in (("mix_sequential", request_mix(200), 1),
                                 ("mix_16_clients", request_mix(200), 16),
                                 ("reads_16_clients", reads, 16)):
        with _server(backend, workers) as (url, key):
            out[name] = _timed(url, key, calls, clients)
            print(f"{backend:10} {name:18} {out[name]['requests_per_second']:8.1f} req/s "
                  f"({out[name]['seconds']} s, statuses {out[name]['statuses']})", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    backends = ["sqlite"] + (["postgresql"] if os.environ.get("OPTIMIZER_TEST_PG_URL") else [])
    results = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "workers": args.workers,
        "backends": {backend: measure(backend, args.workers) for backend in backends},
    }
    text = json.dumps(results, sort_keys=True, indent=2) + "\n"
    sys.stdout.write(text)
    if args.json:
        args.json.write_text(text, encoding="utf-8")
    failed = any(s >= 500 for b in results["backends"].values() for r in b.values() for s in r["statuses"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
