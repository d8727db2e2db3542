"""Real processes for the tests: the CLI, and ``optimizer serve`` on 127.0.0.1 and a free port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from conftest import fresh_postgres_database

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: Mapping[str, str] | None = None, stdin: str | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``optimizer ARGS`` in a new process of this interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args], cwd=REPO, env=dict(env or os.environ),
        input=stdin, capture_output=True, text=True, timeout=timeout,
    )


def cli_process(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``optimizer ARGS`` without waiting for it (read its output with communicate())."""
    return subprocess.Popen(
        [sys.executable, "-m", "agents.cli", *args], cwd=REPO, env=dict(env or os.environ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``optimizer serve`` as a process; ``url`` once it answers /healthz."""

    def __init__(self, env: Mapping[str, str], *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = Path(env["OPTIMIZER_HOME"]).parent / f"serve-{self.port}.log"
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "serve", "--port", str(self.port), *extra],
            cwd=REPO, env=dict(env), stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.stderr_path.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: {self.stderr_path.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, as an operator would; uvicorn finishes requests in flight. Idempotent."""
        if self._stderr.closed:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()

    def stdout(self) -> str:
        """What the server printed on stdout (after stop): nothing, as logs go to stderr."""
        assert self.process.stdout is not None
        return self.process.stdout.read()


def add_user(name: str, env: Mapping[str, str]) -> str:
    done = cli("users", "add", name, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def client(server: Server, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=300)


def as_json(response: httpx.Response) -> Any:
    return json.loads(response.content)


@contextmanager
def seeded_environment(directory: Path, backend: str) -> Iterator[tuple[dict[str, str], str]]:
    """An environment for processes on a seeded store under ``directory``: SQLite, or a fresh
    PostgreSQL database for ``backend == "postgresql"`` (dropped afterwards). Yields the
    environment and the store's URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIMIZER_")}
    env["OPTIMIZER_HOME"] = str(directory / "home")
    url = f"sqlite:///{directory / 'home' / 'optimizer.db'}"
    with ExitStack() as stack:
        if backend == "postgresql":
            url = env["OPTIMIZER_DB_URL"] = stack.enter_context(fresh_postgres_database())
        assert cli("seed", env=env).returncode == 0
        yield env, url
