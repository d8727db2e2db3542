"""The data commands of the CLI: seeding, imports, listings, exit codes and JSON errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import error_of, run

from agents.cli import data as cli_data
from agents.wiring import DB_FILENAME, open_store
from services.data.store import Store

Write = Callable[[Path, str], Path]
Counts = Callable[[], dict[str, int]]

DEMO_PACK = "PP_2022-12-28"
DEMO_PORTFOLIOS = ["demo_concentrated", "demo_diversified", "demo_quality"]


@pytest.fixture
def counts(row_counts: Callable[[Store], dict[str, int]]) -> Counts:
    """``counts()``: rows per table in the store of the current OPTIMIZER_HOME."""

    def _counts() -> dict[str, int]:
        s = open_store()
        try:
            return row_counts(s)
        finally:
            s.close()

    return _counts


HELP_PATHS = [
    [],
    ["seed"],
    ["packs"],
    ["packs", "import"],
    ["packs", "list"],
    ["portfolios"],
    ["portfolios", "import"],
    ["portfolios", "list"],
    ["portfolios", "show"],
    ["policies"],
    ["policies", "list"],
    ["policies", "show"],
]


@pytest.mark.parametrize("path", HELP_PATHS, ids=lambda p: " ".join(p) or "optimizer")
def test_help_at_every_level(
    capsys: pytest.CaptureFixture[str], home: Path, path: list[str]
) -> None:
    code, out, _ = run(capsys, *path, "--help")
    assert code == 0
    assert out.startswith(f"usage: optimizer {' '.join(path)}".rstrip())
    assert "example" in out
    assert not home.exists()  # help touches no store


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert run(capsys)[0] == 2
    assert run(capsys, "packs")[0] == 2


# --- seeding -------------------------------------------------------------------------------------


def test_first_command_on_a_fresh_home_seeds(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    code, out, err = run(capsys, "portfolios", "list", "--json")
    assert code == 0, err
    assert [p["id"] for p in json.loads(out)] == DEMO_PORTFOLIOS
    assert (home / DB_FILENAME).is_file()
    assert err == ""


def test_seed_is_idempotent(counts: Counts, capsys: pytest.CaptureFixture[str], home: Path) -> None:
    code, out, _ = run(capsys, "seed", "--json")
    assert code == 0
    first = json.loads(out)
    assert first["packs"] == {"added": [DEMO_PACK], "present": []}
    assert first["portfolios"]["added"] == DEMO_PORTFOLIOS
    before = counts()
    code, out, _ = run(capsys, "seed", "--json")
    second = json.loads(out)
    assert all(kind["added"] == [] for kind in second.values())
    assert second["policies"]["present"] == first["policies"]["added"]
    assert counts() == before


def test_seed_text_output(capsys: pytest.CaptureFixture[str], seeded_home: Path) -> None:
    code, out, _ = run(capsys, "seed")
    assert code == 0
    assert out.splitlines()[0].split() == ["kind", "added", "already", "present", "added", "ids"]
    assert "portfolios" in out


def test_seed_keeps_a_users_portfolio_of_the_same_id(
    write: Write, capsys: pytest.CaptureFixture[str], seeded_home: Path, tmp_path: Path
) -> None:
    positions = write(tmp_path / "pos.csv", "symbol,shares\nKO,1\n")
    assert (
        run(
            capsys,
            "portfolios",
            "import",
            "--id",
            "demo_quality",
            "--positions",
            str(positions),
            "--replace",
        )[0]
        == 0
    )
    run(capsys, "seed")
    code, out, _ = run(capsys, "portfolios", "show", "demo_quality", "--json")
    assert json.loads(out)["positions"] == [{"lots": 1, "shares": 1, "symbol": "KO"}]


# --- packs ---------------------------------------------------------------------------------------


def test_pack_import_list_and_reimport(
    counts: Counts,
    capsys: pytest.CaptureFixture[str],
    seeded_home: Path,
    pack_files: tuple[Path, Path],
) -> None:
    prices, securities = map(str, pack_files)
    code, out, err = run(
        capsys, "packs", "import", "--id", "PP_T", "--prices", prices, "--securities", securities
    )
    assert code == 0, err
    assert "PP_T imported" in out
    code, out, _ = run(capsys, "packs", "list", "--json")
    listed = json.loads(out)
    assert [p["id"] for p in listed] == [DEMO_PACK, "PP_T"]
    assert listed[1]["asof"] == "2022-01-06" and listed[1]["n_symbols"] == 4
    before = counts()
    code, out, _ = run(
        capsys, "packs", "import", "--id", "PP_T", "--prices", prices, "--securities", securities
    )
    assert code == 0 and "already present" in out
    assert counts() == before
    code, out, _ = run(capsys, "packs", "list")
    assert out.splitlines()[0].split() == ["id", "asof", "dates", "symbols", "hash"]
    assert "PP_T" in out


def test_conflicting_pack_exits_3_with_json(
    counts: Counts,
    write: Write,
    capsys: pytest.CaptureFixture[str],
    seeded_home: Path,
    tmp_path: Path,
    pack_files: tuple[Path, Path],
) -> None:
    prices, securities = map(str, pack_files)
    run(capsys, "packs", "import", "--id", "PP_T", "--prices", prices, "--securities", securities)
    before = counts()
    changed = write(
        tmp_path / "changed.csv", pack_files[0].read_text().replace("CCC,199.5", "CCC,199.6")
    )
    code, out, err = run(
        capsys,
        "packs",
        "import",
        "--id",
        "PP_T",
        "--prices",
        str(changed),
        "--securities",
        securities,
    )
    assert code == 3 and out == ""
    error = error_of(err)
    assert error["code"] == "conflict"
    assert error["details"]["stored_hash"] in error["message"]
    assert counts() == before


def test_invalid_pack_exits_2_and_writes_nothing(
    counts: Counts,
    write: Write,
    capsys: pytest.CaptureFixture[str],
    seeded_home: Path,
    tmp_path: Path,
    pack_files: tuple[Path, Path],
) -> None:
    bad = write(
        tmp_path / "bad.csv",
        pack_files[0].read_text().replace("2022-01-05,BBB,52.25", "2022-01-05,BBB,nan"),
    )
    before = counts()
    code, out, err = run(
        capsys,
        "packs",
        "import",
        "--id",
        "PP_T",
        "--prices",
        str(bad),
        "--securities",
        str(pack_files[1]),
    )
    assert code == 2 and out == ""
    error = error_of(err)
    assert error["code"] == "invalid_input"
    assert error["details"]["problems"][0] | {"message": ""} == {
        "file": str(bad),
        "row": 4,
        "column": "close",
        "value": "nan",
        "rule": "not_finite",
        "message": "",
    }
    assert counts() == before


# --- portfolios ----------------------------------------------------------------------------------

POSITIONS = "symbol,shares,cost_basis,acquired\nAAPL,10,120.50,2021-05-03\nMSFT,5,,\nAAPL,3,,\n"


def test_portfolio_import_and_show(
    write: Write, capsys: pytest.CaptureFixture[str], seeded_home: Path, tmp_path: Path
) -> None:
    positions = str(write(tmp_path / "pos.csv", POSITIONS))
    code, out, err = run(
        capsys,
        "portfolios",
        "import",
        "--id",
        "mine",
        "--positions",
        positions,
        "--cash",
        "1234.5600",
        "--owner",
        "ann",
    )
    assert code == 0, err
    assert f"checked against pack {DEMO_PACK}" in out
    code, out, _ = run(capsys, "portfolios", "show", "mine")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "portfolio mine (owner: ann)"
    table = [line.split() for line in lines if line.startswith(("AAPL", "MSFT"))]
    assert table == [["AAPL", "13", "2"], ["MSFT", "5", "1"]]
    assert lines[-1] == "cash: 1234.5600"
    code, out, _ = run(capsys, "portfolios", "show", "mine", "--json")
    shown = json.loads(out)
    assert shown["cash"] == "1234.5600"
    assert shown["positions"] == [
        {"lots": 2, "shares": 13, "symbol": "AAPL"},
        {"lots": 1, "shares": 5, "symbol": "MSFT"},
    ]
    assert shown["lots"][0] == {
        "acquired": "2021-05-03",
        "cost_basis": "120.50",
        "lot_no": 1,
        "shares": 10,
        "symbol": "AAPL",
    }
    assert out == json.dumps(shown, sort_keys=True, indent=2) + "\n"
    code, out, _ = run(capsys, "portfolios", "list", "--json")
    assert [p["id"] for p in json.loads(out)] == sorted([*DEMO_PORTFOLIOS, "mine"])


def test_portfolio_import_needs_replace_to_overwrite(
    counts: Counts,
    write: Write,
    capsys: pytest.CaptureFixture[str],
    seeded_home: Path,
    tmp_path: Path,
) -> None:
    positions = str(write(tmp_path / "pos.csv", POSITIONS))
    before = counts()
    code, _, err = run(
        capsys, "portfolios", "import", "--id", "demo_quality", "--positions", positions
    )
    assert code == 3
    assert error_of(err)["code"] == "conflict" and "--replace" in error_of(err)["message"]
    assert counts() == before
    code, _, _ = run(
        capsys,
        "portfolios",
        "import",
        "--id",
        "demo_quality",
        "--positions",
        positions,
        "--replace",
    )
    assert code == 0
    _, out, _ = run(capsys, "portfolios", "show", "demo_quality", "--json")
    assert json.loads(out)["cash"] == "0"


@pytest.mark.parametrize(
    ("positions", "extra", "rule", "row"),
    [
        ("symbol,shares\nAAPL,10\nNOPE,5\n", [], "unknown_symbol", 3),
        ("symbol,shares\nSP500,1\n", [], "index_not_holdable", 2),
        ("symbol,shares\nAAPL,-10\n", [], "negative", 2),
        ("symbol,shares\nAAPL,10\n", ["--cash", "-5"], "negative", None),
        ("symbol,shares\nAAPL,10\n", ["--cash", "NaN"], "not_finite", None),
    ],
)
def test_invalid_portfolio_exits_2_and_writes_nothing(
    counts: Counts,
    write: Write,
    capsys: pytest.CaptureFixture[str],
    seeded_home: Path,
    tmp_path: Path,
    positions: str,
    extra: list[str],
    rule: str,
    row: int | None,
) -> None:
    path = write(tmp_path / "pos.csv", positions)
    before = counts()
    code, out, err = run(
        capsys, "portfolios", "import", "--id", "mine", "--positions", str(path), *extra
    )
    assert code == 2 and out == ""
    problem = error_of(err)["details"]["problems"][0]
    assert (problem["rule"], problem["row"]) == (rule, row)
    assert counts() == before


def test_unparseable_cash_is_a_usage_error(
    write: Write, capsys: pytest.CaptureFixture[str], seeded_home: Path, tmp_path: Path
) -> None:
    path = write(tmp_path / "pos.csv", "symbol,shares\nAAPL,10\n")
    code, _, err = run(
        capsys, "portfolios", "import", "--id", "mine", "--positions", str(path), "--cash", "lots"
    )
    assert code == 2
    assert "not an amount" in err


def test_portfolio_import_against_a_named_pack(
    write: Write,
    capsys: pytest.CaptureFixture[str],
    seeded_home: Path,
    tmp_path: Path,
    pack_files: tuple[Path, Path],
) -> None:
    prices, securities = map(str, pack_files)
    run(capsys, "packs", "import", "--id", "PP_T", "--prices", prices, "--securities", securities)
    path = str(write(tmp_path / "pos.csv", "symbol,shares\nAAA,10\n"))
    assert (
        run(capsys, "portfolios", "import", "--id", "mine", "--positions", path)[0] == 2
    )  # not in the latest pack
    assert (
        run(capsys, "portfolios", "import", "--id", "mine", "--positions", path, "--pack", "PP_T")[
            0
        ]
        == 0
    )
    code, _, err = run(
        capsys, "portfolios", "import", "--id", "x", "--positions", path, "--pack", "PP_NOPE"
    )
    assert code == 3
    assert error_of(err)["details"]["available"] == [DEMO_PACK, "PP_T"]


def test_unknown_portfolio_exits_3(capsys: pytest.CaptureFixture[str], seeded_home: Path) -> None:
    code, out, err = run(capsys, "portfolios", "show", "nope")
    assert code == 3 and out == ""
    error = error_of(err)
    assert error["code"] == "not_found"
    assert not any(p in err for p in DEMO_PORTFOLIOS)  # no stored id is named


def test_portfolios_list_text(capsys: pytest.CaptureFixture[str], seeded_home: Path) -> None:
    code, out, _ = run(capsys, "portfolios", "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["id", "owner", "cash", "lots", "symbols", "description"]
    assert [line.split()[0] for line in out.splitlines()[2:]] == DEMO_PORTFOLIOS


# --- policies ------------------------------------------------------------------------------------


def test_policies_list_and_show(capsys: pytest.CaptureFixture[str], seeded_store: Store) -> None:
    ids = [p["id"] for p in seeded_store.list_policies()]
    assert ids
    code, out, _ = run(capsys, "policies", "list", "--json")
    assert code == 0 and [p["id"] for p in json.loads(out)] == ids
    code, out, _ = run(capsys, "policies", "list")
    assert [line.split()[0] for line in out.splitlines()[2:]] == ids
    code, out, _ = run(capsys, "policies", "show", ids[0], "--json")
    shown = json.loads(out)
    assert shown["resolved"]["commission_per_trade"] == "5.00"  # from the constraint defaults
    assert shown["template"] == seeded_store.list_policies()[0]["policy"]
    code, out, _ = run(capsys, "policies", "show", ids[0])
    assert code == 0 and "commission_per_trade" in out and "template" in out


def test_unknown_policy_exits_3(capsys: pytest.CaptureFixture[str], seeded_home: Path) -> None:
    code, _, err = run(capsys, "policies", "show", "nope")
    assert code == 3
    assert "valid ids" in error_of(err)["message"]


# --- errors, logging, wiring ---------------------------------------------------------------------


def test_unexpected_error_is_logged_once_and_exits_1(
    capsys: pytest.CaptureFixture[str], seeded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: Any, store: Store) -> int:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli_data, "_cmd_packs_list", broken)
    code, out, err = run(capsys, "packs", "list")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2
    logged = json.loads(lines[0])
    assert logged["event"] == "internal_error" and logged["level"] == "error"
    assert "kaboom" in json.dumps(logged["exception"])
    error = error_of(err)
    reference = error["details"]["reference"]
    assert logged["reference"] == reference and logged["error_type"] == "RuntimeError"
    assert error == {
        "code": "internal_error",
        "details": {"reference": reference, "type": "RuntimeError"},
        "message": f"internal error (reference {reference}): the command failed unexpectedly; "
        "the log line with this reference has the details",
    }
    assert "kaboom" not in lines[1]  # the exception's message may hold data: the log only
    assert "Traceback" not in err and '"locals"' not in err


def test_logs_go_to_stderr_never_stdout(
    capsys: pytest.CaptureFixture[str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMIZER_LOG_LEVEL", "INFO")
    code, out, err = run(capsys, "packs", "list", "--json")
    assert code == 0
    assert [p["id"] for p in json.loads(out)] == [DEMO_PACK]
    assert json.loads(err.splitlines()[0])["event"] == "seeded empty store"


def test_bad_log_level_is_an_input_error(
    capsys: pytest.CaptureFixture[str], seeded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMIZER_LOG_LEVEL", "LOUD")
    code, _, err = run(capsys, "packs", "list")
    assert code == 2
    assert "OPTIMIZER_LOG_LEVEL" in error_of(err)["message"]


def test_home_option_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path, seeded_db: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / DB_FILENAME).write_bytes(seeded_db.read_bytes())
    for argv in (
        ["--home", str(other), "packs", "list", "--json"],
        ["packs", "list", "--json", "--home", str(other)],
    ):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and json.loads(out)[0]["id"] == DEMO_PACK
    assert not home.exists()  # OPTIMIZER_HOME was not used


def test_db_url_overrides_the_home_file(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("OPTIMIZER_DB_URL", url)
    s = open_store()
    assert s.url == url and (tmp_path / "elsewhere.db").is_file()
    s.close()


def test_runs_as_a_module(home: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", "--home", str(home), "packs", "list", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["id"] == DEMO_PACK
