"""Fuzzing the edges: random CSV rows, requests and patterns against the CLI, as alice on a store
where bob owns a portfolio too.

Whatever comes in, every command must end with exit code 0, 2 or 3 (never 1, an internal
error), print no traceback, write nothing when it fails (every table hashes the same before and
after), and never name bob's portfolio unless the caller named it first. The number of examples
is bounded so the module stays quick in CI; raise ``FUZZ_EXAMPLES`` to fuzz longer locally.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_hash import table_hashes

from agents.wiring import open_store
from services.data.store import Store

PACK = "PP_2022-12-28"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BOB_PF = "bob_pf"

# Text that has broken parsers before: numbers in every disguise, formulas, control characters.
NASTY = st.sampled_from([
    "", " ", "0", "-1", "1.5", "1e400", "-1e400", "1e308", "nan", "NaN", "inf", "-inf", "true",
    "null", "1_000", "0x10", "10" * 20, str(2**63), "=1+1", "+SUM(A1)", "-2", "@cmd", "\t", "€",
    "AAPL\x00", "A" * 70, "2022-02-30", "9999-12-31", "1899-12-31", "20220103", "٣",
])
SYMBOLS = st.sampled_from(["AAPL", "MSFT", "SP500", "XOM", "KO", "ZZZZ"]) | NASTY
NUMBERS = (
    st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str)
    | NASTY
)
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12) | NASTY
)


@pytest.fixture
def fuzz_home(seeded_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Store]:
    """Seeded, with alice's and bob's portfolios; yields a store for fingerprints."""
    positions = tmp_path / "seed_positions.csv"
    positions.write_text("symbol,shares\nAAPL,10\nMSFT,5\n")
    for user in ("alice", "bob"):
        code, _, err = run(capsys, "portfolios", "import", "--id", f"{user}_pf", "--positions",
                           str(positions), "--cash", "1000", "--user", user)
        assert code == 0, err
    store = open_store()
    yield store
    store.close()


def check(store: Store, capsys: pytest.CaptureFixture[str], sent: str, *argv: str) -> int:
    """Run a command as fuzzed input arrives and assert the invariants; return its exit code."""
    before = table_hashes(store)
    code, out, err = run(capsys, *argv)
    assert code in (0, 2, 3), (argv, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out
    if code != 0:
        assert table_hashes(store) == before, argv  # a failed command writes nothing
        if argv[0] != "run":  # a run whose step failed prints its report and exits 3
            assert out == ""
            last = err.strip().splitlines()[-1]
            if code == 2 and ": error: " in last:
                assert err.startswith("usage: ")  # argparse's own usage error, before any work
            else:
                assert set(json.loads(last)) == {"code", "message", "details"}
    if BOB_PF not in sent:
        assert BOB_PF not in out and BOB_PF not in err, argv
    return code


# --- CSV files -----------------------------------------------------------------------------------


@FUZZ
@given(rows=st.lists(st.tuples(SYMBOLS, NUMBERS, NUMBERS | st.just(""), NASTY | st.just("")),
                     max_size=6),
       cash=NUMBERS, replace=st.booleans(), target=st.sampled_from(["fz_pf", "alice_pf", BOB_PF]))
def test_fuzzed_positions_files(
    fuzz_home: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    rows: list[tuple[str, str, str, str]], cash: str, replace: bool, target: str,
) -> None:
    path = tmp_path / "positions.csv"
    text = "symbol,shares,cost_basis,acquired\n" + "".join(
        ",".join(f'"{v}"' if "," in v or '"' in v else v for v in row) + "\n" for row in rows
    )
    path.write_text(text, encoding="utf-8")
    argv = ["portfolios", "import", "--id", target, "--positions", str(path), "--cash", cash,
            "--user", "alice"] + (["--replace"] if replace else [])
    code = check(fuzz_home, capsys, text + cash + target, *argv)
    if target == BOB_PF:
        assert code != 0 and fuzz_home.get_portfolio(BOB_PF).owner == "bob"


@FUZZ
@given(rows=st.lists(st.tuples(NASTY | st.sampled_from(["2022-01-03", "2022-01-04", "2022-01-05"]),
                               st.sampled_from(["AAA", "BBB"]) | SYMBOLS, NUMBERS), max_size=8),
       allow_jumps=st.booleans())
def test_fuzzed_pack_files(
    fuzz_home: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    rows: list[tuple[str, str, str]], allow_jumps: bool,
) -> None:
    prices, securities = tmp_path / "prices.csv", tmp_path / "securities.csv"
    prices.write_text("date,symbol,close\n" + "".join(
        ",".join(f'"{v}"' if "," in v or '"' in v else v for v in row) + "\n" for row in rows))
    securities.write_text("symbol,name,sector,asset_class\nAAA,A,Tech,equity\nBBB,B,Energy,equity\n")
    check(fuzz_home, capsys, "", "packs", "import", "--id", "PP_FUZZ", "--prices", str(prices),
          "--securities", str(securities), *(["--allow-jumps"] if allow_jumps else []))


# --- requests ------------------------------------------------------------------------------------

POSITION = st.fixed_dictionaries({"symbol": SYMBOLS | st.sampled_from(["AAPL", "MSFT"]),
                                  "shares": JSON_SCALARS})
PORTFOLIO = st.one_of(
    st.fixed_dictionaries({"portfolio_id": st.sampled_from(["alice_pf", BOB_PF, "free_pf", ""])}),
    st.fixed_dictionaries({"portfolio": st.fixed_dictionaries(
        {"positions": st.lists(POSITION, max_size=3)}, optional={"cash": JSON_SCALARS})}),
)
IMPACT = st.fixed_dictionaries(
    {"pricing_pack_id": st.sampled_from([PACK, "PP_NOPE"]),
     "proposed_trades": st.lists(st.fixed_dictionaries(
         {"symbol": SYMBOLS, "action": st.sampled_from(["BUY", "SELL", "HOLD", "buy"]),
          "quantity": JSON_SCALARS}), max_size=2)},
    optional={"lookback_days": JSON_SCALARS, "commission_per_trade": JSON_SCALARS,
              "market_impact_bps": JSON_SCALARS, "benchmark": JSON_SCALARS, "surprise": JSON_SCALARS},
)
POLICY = st.fixed_dictionaries({}, optional={
    name: JSON_SCALARS for name in ("risk_aversion", "commission_per_trade", "lookback_days",
                                    "max_single_position_pct", "min_trade_value", "method",
                                    "max_turnover_pct", "cash_buffer_pct")
})
PROPOSE = st.fixed_dictionaries(
    {"pricing_pack_id": st.just(PACK), "policy_id": st.sampled_from(["aggressive_growth", "nope"])},
    optional={"policy": POLICY, "ratings": st.dictionaries(SYMBOLS, JSON_SCALARS, max_size=2)},
)


@FUZZ
@given(portfolio=PORTFOLIO, body=IMPACT)
def test_fuzzed_impact_requests(
    fuzz_home: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    portfolio: dict[str, Any], body: dict[str, Any],
) -> None:
    request = tmp_path / "request.json"
    text = json.dumps({**body, **portfolio})
    request.write_text(text)
    check(fuzz_home, capsys, text, "call", "optimizer.analyze_impact", "--input", str(request),
          "--user", "alice")


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 5))
@given(portfolio=PORTFOLIO, body=PROPOSE)
def test_fuzzed_proposal_requests(
    fuzz_home: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    portfolio: dict[str, Any], body: dict[str, Any],
) -> None:
    request = tmp_path / "request.json"
    text = json.dumps({**body, **portfolio})
    request.write_text(text)
    check(fuzz_home, capsys, text, "call", "optimizer.propose_trades", "--input", str(request),
          "--user", "alice")


# --- patterns ------------------------------------------------------------------------------------

REFERENCES = st.sampled_from([
    "inputs.portfolio_id", "inputs.nope", "steps.impact.current_value", "steps.later.x", "item.x",
    "#/$defs/x", "http://127.0.0.1:9/x", "file:///etc/passwd", "", "inputs",
])


def _step(i: int, ref: str, capability: str) -> dict[str, Any]:
    return {"id": "impact" if i == 0 else f"s{i}", "capability": capability,
            "args": {"portfolio_id": {"$ref": ref}, "pricing_pack_id": PACK, "proposed_trades": []}}


@FUZZ
@given(n_steps=st.sampled_from([0, 1, 2, 51]), refs=st.lists(REFERENCES, min_size=1, max_size=3),
       capability=st.sampled_from(["optimizer.analyze_impact", "optimizer.nope", ""]),
       schema_ref=REFERENCES, extra=st.dictionaries(st.sampled_from(["when", "$ref", "on_error"]),
                                                     JSON_SCALARS, max_size=1),
       portfolio_id=st.sampled_from(["alice_pf", BOB_PF, "free_pf"]))
def test_fuzzed_patterns(
    fuzz_home: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], n_steps: int,
    refs: list[str], capability: str, schema_ref: str, extra: dict[str, Any], portfolio_id: str,
) -> None:
    steps = [_step(i, refs[i % len(refs)], capability) for i in range(n_steps)]
    if steps:
        steps[-1].update(extra)
    document = {
        "id": "fuzzed", "version": "1", "description": "fuzzed",
        "inputs": {"type": "object", "properties": {"portfolio_id": {"type": "string"},
                                                    "other": {"$ref": schema_ref}}},
        "steps": steps, "outputs": {"value": {"$ref": refs[0]}},
    }
    pattern, inputs = tmp_path / "pattern.json", tmp_path / "inputs.json"
    pattern.write_text(json.dumps(document))
    inputs.write_text(json.dumps({"portfolio_id": portfolio_id}))
    sent = json.dumps(document) + portfolio_id
    check(fuzz_home, capsys, sent, "graph", str(pattern))
    check(fuzz_home, capsys, sent, "run", str(pattern), "--input", str(inputs), "--user", "alice")
