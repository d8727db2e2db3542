"""Environment faults and hostile files: a read-only or full store, corrupt and truncated files,
absurdly deep JSON, patterns that reach outside themselves or grow without bound, a crash inside
a command and a reader that closes stdout. Each ends in a clear error with the documented exit
code, nothing written, no traceback and no local variable shown.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import error_of, run
from sqlalchemy import event
from store_hash import table_hashes

from agents.cli import BROKEN_PIPE_EXIT
from agents.cli import data as cli_data
from agents.wiring import DB_FILENAME, open_store
from services.data.importers import read_pack
from services.data.store import Store
from services.errors import DomainError

ROOT = Path(__file__).resolve().parents[1]
PACK = "PP_2022-12-28"
DEMO_PACK_DIR = ROOT / "seeds" / "optimizer" / "packs" / PACK
REQUEST = ROOT / "seeds" / "optimizer" / "requests" / "propose_trades_demo.json"


# --- the store -----------------------------------------------------------------------------------


@pytest.fixture
def read_only_home(seeded_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The seeded store opened read-only by SQLite itself (chmod means nothing to root)."""
    monkeypatch.setenv("OPTIMIZER_DB_URL", f"sqlite:///file:{seeded_home / DB_FILENAME}?mode=ro&uri=true")
    return seeded_home


def test_a_read_only_store_serves_reads_and_refuses_writes_with_exit_3(
    read_only_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (read_only_home / DB_FILENAME).read_bytes()
    code, out, _ = run(capsys, "portfolios", "list", "--json")
    assert code == 0 and "demo_diversified" in out
    positions = tmp_path / "p.csv"
    positions.write_text("symbol,shares\nAAPL,1\n")
    code, out, err = run(capsys, "portfolios", "import", "--id", "mine", "--positions", str(positions))
    assert (code, out) == (3, "")
    error = error_of(err)
    assert error["code"] == "read_only_store" and "writable" in error["message"]
    assert "INSERT" not in err and "Traceback" not in err
    assert (read_only_home / DB_FILENAME).read_bytes() == before


def test_a_result_is_printed_even_when_its_history_cannot_be_recorded(
    read_only_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "call", "optimizer.propose_trades", "--input", str(REQUEST))
    assert code == 0, err
    result = json.loads(out)
    assert result["trades"] and result["_metadata"]["warnings"] == len(result["warnings"])
    assert any("not recorded in the proposals history (read_only_store)" in w for w in result["warnings"])


def test_a_full_disk_is_a_clear_error_without_sql_or_data(store: Store) -> None:
    with store.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    store.engine.dispose()

    @event.listens_for(store.engine, "connect")
    def _full(dbapi_connection: Any, _record: Any) -> None:
        # SQLite's own quota: the file may not grow, exactly what a full disk does to it.
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    pack = read_pack(PACK, DEMO_PACK_DIR / "prices.csv", DEMO_PACK_DIR / "securities.csv")
    before = table_hashes(store)
    with pytest.raises(DomainError) as exc:
        store.put_pack(pack)
    assert exc.value.code == "store_full" and exc.value.exit_code == 3
    text = json.dumps(exc.value.to_dict())
    assert "INSERT" not in text and "AAPL" not in text and "parameters" not in text.lower()
    assert table_hashes(store) == before


# --- files ---------------------------------------------------------------------------------------


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    whole = gzip.compress((DEMO_PACK_DIR / "prices.csv").read_bytes())
    files = {
        "truncated.csv.gz": whole[: len(whole) // 3],
        "corrupt.csv.gz": whole[:10] + bytes(range(256)) * 8,
        "not_gzip.csv.gz": b"date,symbol,close\n",
        "binary.csv": bytes(range(256)),
        "truncated.csv": (DEMO_PACK_DIR / "prices.csv").read_bytes()[:1000],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


def test_corrupt_and_truncated_price_files_are_input_errors_naming_the_file(
    seeded_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store()
    before = table_hashes(store)
    for name, path in _bad_files(tmp_path).items():
        code, out, err = run(capsys, "packs", "import", "--id", "PP_BAD", "--prices", str(path),
                             "--securities", str(DEMO_PACK_DIR / "securities.csv"))
        assert (code, out) == (2, ""), name
        assert str(path) in error_of(err)["message"], name
        assert "Traceback" not in err
    assert table_hashes(store) == before
    store.close()


def test_deep_huge_and_broken_json_requests_are_input_errors_naming_the_file(
    seeded_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "deep65.json": '{"a":' * 65 + "1" + "}" * 65,
        "huge.json": json.dumps({"portfolio_id": "x" * (6 * 1024 * 1024)}),
        "cut.json": REQUEST.read_text()[:40],
        "latin1.json": "{\"a\": \"\xe9\"}",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_bytes(text.encode("latin-1" if name == "latin1.json" else "utf-8"))
        for argv in (("call", "optimizer.propose_trades", "--input", str(path)),
                     ("run", "policy_rebalance", "--input", str(path)),
                     ("run", str(path), "--input", str(REQUEST))):
            code, out, err = run(capsys, *argv)
            assert (code, out) == (2, ""), (name, argv)
            assert str(path) in error_of(err)["message"], (name, argv)
            assert "Traceback" not in err


# --- the CLI never leaks -------------------------------------------------------------------------


def test_an_internal_error_shows_a_reference_and_no_locals(
    seeded_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: Any, store: Store) -> int:
        secret_lots = ["client-secret-lot-4711"]  # a local variable the log must not show
        raise KeyError(len(secret_lots))

    monkeypatch.setattr(cli_data, "_cmd_portfolios_show", broken)
    code, out, err = run(capsys, "portfolios", "show", "demo_diversified")
    assert (code, out) == (1, "")
    assert "client-secret-lot-4711" not in err and "Traceback" not in err
    log_line, error_line = err.strip().splitlines()
    reference = json.loads(error_line)["details"]["reference"]
    assert json.loads(log_line)["reference"] == reference and reference in error_line


def test_a_closed_stdout_ends_quietly_with_the_broken_pipe_status(seeded_home: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "portfolios", "show", "demo_diversified", "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the command writes anything
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == BROKEN_PIPE_EXIT
    assert err == ""


# --- patterns ------------------------------------------------------------------------------------


class _Counter(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that counts the requests it gets."""
    _Counter.hits = []
    server = HTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/schema.json"
    server.shutdown()
    server.server_close()


def _pattern(inputs: dict[str, Any], steps: int = 1) -> dict[str, Any]:
    return {
        "id": "probe", "version": "1", "description": "One quick step.", "inputs": inputs,
        "steps": [{"id": f"s{i}", "capability": "optimizer.analyze_impact",
                   "args": {"portfolio": {"positions": [{"symbol": "AAPL", "shares": 10}]},
                            "pricing_pack_id": PACK, "proposed_trades": []}} for i in range(steps)],
        "outputs": {},
    }


def test_a_pattern_may_not_refer_outside_itself_and_nothing_is_fetched(
    seeded_home: Path, tmp_path: Path, listener: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = {"type": "object", "properties": {"a": {"$ref": listener}, "b": {"$ref": "file:///etc/passwd"}}}
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(_pattern(inputs)))
    (tmp_path / "in.json").write_text(json.dumps({"a": 1, "b": 2}))
    code, out, err = run(capsys, "run", str(path), "--input", str(tmp_path / "in.json"))
    assert (code, out) == (2, "")
    pointers = [e["pointer"] for e in error_of(err)["details"]["errors"]]
    assert pointers == ["/inputs/properties/a/$ref", "/inputs/properties/b/$ref"]
    assert _Counter.hits == []
    assert run(capsys, "graph", str(path))[0] == 2


def test_pattern_steps_and_run_state_are_bounded(
    seeded_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "in.json").write_text("{}")
    big = tmp_path / "big.json"
    big.write_text(json.dumps(_pattern({"type": "object"}, steps=51)))
    code, _, err = run(capsys, "run", str(big), "--input", str(tmp_path / "in.json"))
    assert code == 2 and error_of(err)["details"]["errors"][0]["pointer"] == "/steps"

    import patterns.compiler

    monkeypatch.setattr(patterns.compiler, "MAX_RUN_STATE_BYTES", 2_000)
    two = tmp_path / "two.json"
    two.write_text(json.dumps(_pattern({"type": "object"}, steps=2)))
    code, out, _ = run(capsys, "run", str(two), "--input", str(tmp_path / "in.json"), "--json")
    report = json.loads(out)
    assert code == 3 and report["status"] == "failed"
    assert report["steps"]["s0"]["error"]["code"] == "run_state_too_large"
    assert report["steps"]["s1"]["status"] == "skipped"

