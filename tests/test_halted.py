"""The ``halted`` column of securities.csv (issue 12 §3): read, hashed so that older packs keep
their hash, stored (older stores gain the column), and never traded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import text

from services.allocation.rebalance import Holdings, propose_trades
from services.data.importers import read_pack
from services.data.policy import Policy
from services.data.seeds import load_benchmarks
from services.data.store import Store
from services.errors import InputError

DEMO = Path("seeds/optimizer/packs/PP_2022-12-28")
# The demo pack's hash as stored by every release before the column existed.
DEMO_HASH = "03f398cbf385539e30215d5f537e770981c7df69a57a0e60590a0a8ef3538288"


def securities_with(tmp_path: Path, flags: dict[str, str], header: bool = True) -> Path:
    """The demo security master with a ``halted`` column (``flags`` per symbol, else empty)."""
    lines = DEMO.joinpath("securities.csv").read_text(encoding="utf-8").splitlines()
    out = [lines[0] + (",halted" if header else "")]
    for line in lines[1:]:
        out.append(f"{line},{flags.get(line.split(',')[0], '')}" if header else line)
    path = tmp_path / "securities.csv"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def demo_pack(securities: Path):
    return read_pack("PP_2022-12-28", DEMO / "prices.csv", securities)


def test_a_pack_without_halted_securities_keeps_its_hash(tmp_path: Path) -> None:
    assert demo_pack(DEMO / "securities.csv").content_hash == DEMO_HASH
    no_flags = demo_pack(securities_with(tmp_path, {"AAPL": "false", "AMD": "0", "XOM": "No"}))
    assert not no_flags.halted and no_flags.content_hash == DEMO_HASH


def test_halted_flags_are_read_and_change_the_hash_by_their_line(tmp_path: Path) -> None:
    pack = demo_pack(securities_with(tmp_path, {"BBY": "true", "XOM": "YES", "AMD": "1"}))
    assert pack.halted == {"AMD": "marked halted in the pack", "BBY": "marked halted in the pack",
                           "XOM": "marked halted in the pack"}
    assert pack.security("BBY").halted and not pack.security("AAPL").halted
    # Recomputed by hand: the master's lines, halted ones ending in "|halted", then dates and closes.
    h = hashlib.sha256()
    for s in sorted(pack.securities, key=lambda s: s.symbol):
        end = "|halted" if s.symbol in ("AMD", "BBY", "XOM") else ""
        h.update(f"S|{s.symbol}|{s.name}|{s.sector}|{s.asset_class}{end}\n".encode())
    unflagged = demo_pack(DEMO / "securities.csv")
    master = hashlib.sha256()
    for s in sorted(unflagged.securities, key=lambda s: s.symbol):
        master.update(f"S|{s.symbol}|{s.name}|{s.sector}|{s.asset_class}\n".encode())
    assert pack.content_hash != DEMO_HASH
    # Only the master's part differs: the same closes hashed after either master.
    from services.data.models import pack_content_hash

    assert pack_content_hash(pack.securities, pack.closes) == pack.content_hash
    assert pack_content_hash(unflagged.securities, pack.closes) == DEMO_HASH


def test_a_bad_flag_is_an_input_error_naming_row_and_value(tmp_path: Path) -> None:
    with pytest.raises(InputError) as bad:
        demo_pack(securities_with(tmp_path, {"AMD": "halted", "BBY": "2"}))
    problems = bad.value.details["problems"]
    assert [(p["row"], p["column"], p["value"], p["rule"]) for p in problems] == [
        (3, "halted", "halted", "bad_flag"), (5, "halted", "2", "bad_flag")]


def test_the_flag_is_stored_and_an_older_store_gains_the_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    store.create_schema()
    store.put_pack(demo_pack(DEMO / "securities.csv"))
    with store.engine.begin() as conn:  # the table (and its rows) as they were before the column
        conn.execute(text("ALTER TABLE pack_securities DROP COLUMN halted"))
    store.close()
    reopened = Store(url)
    reopened.create_schema()
    old = reopened.get_pack("PP_2022-12-28")  # hash verified on read
    assert old.content_hash == DEMO_HASH and not old.halted
    flagged = demo_pack(securities_with(tmp_path, {"BBY": "true"}))
    reopened.put_pack(type(flagged)(id="PP_halted", securities=flagged.securities, closes=flagged.closes))
    reopened.close()
    fresh = Store(url)  # no pack cache: read back from the rows
    assert fresh.get_pack("PP_halted").halted == {"BBY": "marked halted in the pack"}
    assert fresh.get_pack("PP_2022-12-28").content_hash == DEMO_HASH
    fresh.close()


def test_a_halted_security_is_neither_bought_nor_sold(module_store, tmp_path: Path) -> None:
    portfolio = module_store.get_portfolio("demo_diversified")
    holdings = Holdings(portfolio.id, portfolio.positions(), portfolio.cash)
    policy = Policy(method="max_sharpe", universe="pack", max_single_position_pct=12.0, max_turnover_pct=30.0)
    ratings, benchmarks = module_store.get_ratings(), load_benchmarks()
    free = propose_trades(demo_pack(DEMO / "securities.csv"), holdings, policy, ratings, benchmarks)
    moved = {t.symbol for t in free.trades if t.quantity}
    held_traded = sorted(moved & set(holdings.positions))[:2]
    bought_new = sorted(moved - set(holdings.positions))[:2]
    assert held_traded and bought_new  # without the flag, the optimizer trades these
    flags = {s: "true" for s in held_traded + bought_new}
    halted = propose_trades(demo_pack(securities_with(tmp_path, flags)), holdings, policy, ratings, benchmarks)
    trades = {t.symbol: t for t in halted.trades}
    for sym in held_traded:
        assert (trades[sym].action, trades[sym].quantity) == ("HOLD", 0)
        assert trades[sym].target_shares == holdings.positions[sym]
        assert "halted" in trades[sym].rationale
    for sym in bought_new:
        assert sym not in trades or trades[sym].quantity == 0
    for sym in held_traded + bought_new:
        assert any(w.startswith(f"{sym} is halted (marked halted in the pack): neither bought nor sold, "
                                "valued at its last close of 2022-12-28") for w in halted.warnings)
