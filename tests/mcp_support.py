"""Starting ``optimizer mcp`` for tests: as a subprocess over stdio (raw JSON-RPC or the SDK client)
and over streamable HTTP on a free 127.0.0.1 port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PACK = "PP_2022-12-28"
PROPOSE = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "quality_focused"}
REBALANCE_INPUTS = json.loads((ROOT / "patterns" / "examples" / "policy_rebalance.json").read_text())


def cli(*args: str) -> list[str]:
    """The command line that runs this worktree's CLI."""
    return [sys.executable, "-m", "agents.cli", *args]


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIMIZER_")}
    return {**env, "OPTIMIZER_HOME": str(home), **extra}


def seeded_home(seeded_db: Path, home: Path) -> Path:
    """A home holding a copy of the seeded demo store (seeding from scratch takes longer)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(seeded_db, home / "optimizer.db")
    return home


class RawStdio:
    """JSON-RPC over a subprocess's stdin/stdout, one message a line, every stdout line kept."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None, argv: list[str] | None = None):
        self.process = subprocess.Popen(
            argv or cli("mcp", *args), cwd=ROOT, env=env or server_env(home),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )
        self.stdout_lines: list[str] = []
        self._next_id = 0

    def send(self, message: dict[str, Any]) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Send a request; returns it and its response (notifications in between are kept, skipped)."""
        self._next_id += 1
        message = {"jsonrpc": "2.0", "id": self._next_id, "method": method, **({"params": params} if params else {})}
        self.send(message)
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        while True:
            line = stdout.readline()
            if not line:
                raise AssertionError(f"server closed stdout; stderr:\n{self.stderr()}")
            self.stdout_lines.append(line)
            response = json.loads(line)
            if response.get("id") == message["id"]:
                return message, response

    def initialize(self) -> tuple[dict[str, Any], dict[str, Any]]:
        exchange = self.request("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "optimizer-tests", "version": "1"},
        })
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return exchange

    def close(self) -> str:
        """Close stdin, wait for the server to exit; returns its stderr (the rest of stdout is kept)."""
        rest, stderr = self.process.communicate(timeout=60)
        self.stdout_lines.extend(rest.splitlines(keepends=True))
        return stderr

    def stderr(self) -> str:
        """What the server wrote to stderr (after stopping it, if it still runs)."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.communicate(timeout=60)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_server(home: Path) -> Iterator[str]:
    """``optimizer mcp --transport http`` on a free port; yields its /mcp URL, stops it afterwards."""
    port = free_port()
    process = subprocess.Popen(
        cli("mcp", "--transport", "http", "--host", "127.0.0.1", "--port", str(port)),
        cwd=ROOT, env=server_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited: {process.communicate()[1].decode()}")
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.communicate(timeout=30)
