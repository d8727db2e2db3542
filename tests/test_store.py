"""The store: frozen packs that round-trip exactly, exact money, and all-or-nothing writes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, insert, update
from sqlalchemy.exc import IntegrityError

from agents.wiring import DB_FILENAME, open_store
from services.data.importers import read_pack
from services.data.models import Lot, Portfolio, PricingPack, Security
from services.data.seeds import load_benchmarks, load_constraint_defaults, seed
from services.data.store import Store, prices
from services.errors import ConflictError, InputError, NotFoundError, OptimizerError

Write = Callable[[Path, str], Path]
RowCounts = Callable[[Store], dict[str, int]]


@pytest.fixture
def store(db_url: str | None, home: Path) -> Iterator[Store]:
    """An empty store: every test here runs on SQLite and on PostgreSQL (see ``db_url``)."""
    s = open_store()
    yield s
    s.close()


@pytest.fixture
def pack(pack_files: tuple[Path, Path]) -> PricingPack:
    return read_pack("PP_T", *pack_files)


def fail_on(store: Store, sql_prefix: str) -> None:
    """Make the store's next statement starting with ``sql_prefix`` fail, mid-transaction."""

    @event.listens_for(store.engine, "before_cursor_execute")
    def _boom(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(sql_prefix.upper()):
            raise RuntimeError(f"injected failure on {sql_prefix}")


# --- packs ---------------------------------------------------------------------------------------


def test_pack_round_trip_is_exact(home: Path, store: Store, pack: PricingPack) -> None:
    assert store.put_pack(pack) is True
    fresh = open_store()  # a new instance: nothing cached, everything read from the database
    loaded = fresh.get_pack("PP_T")
    pd.testing.assert_frame_equal(loaded.closes, pack.closes)
    assert loaded.content_hash == pack.content_hash
    assert loaded.securities == pack.securities
    assert loaded.asof == date(2022, 1, 6)
    assert fresh.get_pack("PP_T") is loaded  # cached: packs are immutable
    fresh.close()


def test_list_packs(store: Store, pack: PricingPack) -> None:
    other = PricingPack(id="PP_A", securities=pack.securities, closes=pack.closes.iloc[:2])
    store.put_pack(pack)
    store.put_pack(other)
    assert store.list_packs() == [
        {
            "id": "PP_A",
            "asof": "2022-01-04",
            "content_hash": other.content_hash,
            "n_dates": 2,
            "n_symbols": 4,
        },
        {
            "id": "PP_T",
            "asof": "2022-01-06",
            "content_hash": pack.content_hash,
            "n_dates": 4,
            "n_symbols": 4,
        },
    ]


def test_reimporting_the_same_pack_is_a_no_op(
    row_counts: RowCounts, store: Store, pack: PricingPack, pack_files: tuple[Path, Path]
) -> None:
    store.put_pack(pack)
    before = row_counts(store)
    assert store.put_pack(read_pack("PP_T", *pack_files)) is False
    assert row_counts(store) == before
    assert before["prices"] == 15


def test_conflicting_pack_content_is_refused(
    row_counts: RowCounts, store: Store, pack: PricingPack
) -> None:
    store.put_pack(pack)
    before = row_counts(store)
    changed = pack.closes.copy()
    changed.iloc[-1, 0] = 10.26
    other = PricingPack(id="PP_T", securities=pack.securities, closes=changed)
    with pytest.raises(ConflictError) as exc:
        store.put_pack(other)
    assert pack.content_hash in exc.value.message and other.content_hash in exc.value.message
    assert exc.value.exit_code == 3
    assert row_counts(store) == before


def test_unknown_pack_lists_the_available_ids(store: Store, pack: PricingPack) -> None:
    store.put_pack(pack)
    with pytest.raises(NotFoundError, match="PP_T") as exc:
        store.get_pack("PP_NOPE")
    assert exc.value.details["available"] == ["PP_T"]


def test_a_tampered_pack_is_detected(home: Path, store: Store, pack: PricingPack) -> None:
    store.put_pack(pack)
    with store.engine.begin() as conn:
        conn.execute(
            update(prices)
            .where(prices.c.symbol == "CCC", prices.c.date == date(2022, 1, 5))
            .values(close=199.6)
        )
    with pytest.raises(OptimizerError) as exc:
        open_store().get_pack("PP_T")
    assert exc.value.code == "corrupt_pack"


def test_a_failure_mid_import_leaves_no_partial_rows(
    row_counts: RowCounts, store: Store, pack: PricingPack
) -> None:
    before = row_counts(store)
    fail_on(store, "INSERT INTO prices")
    with pytest.raises(RuntimeError, match="injected"):
        store.put_pack(pack)
    assert row_counts(store) == before
    assert store.list_packs() == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.assign(ZZZ=1.0), "not in the security master"),
        (lambda c: c.assign(AAA=np.nan), "no close at all"),
        (
            lambda c: c.apply(lambda col: col.where(c.index != c.index[1])),
            "no close for any symbol",
        ),
        (lambda c: c.assign(BBB=-c["BBB"]), "greater than 0"),
    ],
)
def test_packs_that_would_not_read_back_are_refused(
    store: Store, pack: PricingPack, mutate: Any, message: str
) -> None:
    bad = PricingPack(id="PP_BAD", securities=pack.securities, closes=mutate(pack.closes))
    with pytest.raises(InputError, match=message):
        store.put_pack(bad)
    assert store.list_packs() == []


def test_a_wrong_content_hash_is_refused(store: Store, pack: PricingPack) -> None:
    forged = PricingPack(
        id="PP_T", securities=pack.securities, closes=pack.closes, content_hash="0" * 64
    )
    with pytest.raises(InputError, match="hashes to"):
        store.put_pack(forged)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(st.none(), st.floats(min_value=1e-9, max_value=1e12)), min_size=3, max_size=3
        ),
        min_size=1,
        max_size=8,
    ).filter(
        lambda rows: (
            all(any(v is not None for v in r) for r in rows)
            and all(any(r[j] is not None for r in rows) for j in range(3))
        )
    )
)
def test_any_valid_frame_round_trips(rows: list[list[float | None]]) -> None:
    closes = pd.DataFrame(
        [[np.nan if v is None else v for v in r] for r in rows],
        index=pd.to_datetime([f"2023-01-{i + 1:02d}" for i in range(len(rows))]),
        columns=["C", "A", "B"],  # deliberately unsorted: the store returns the canonical order
    )
    securities = tuple(Security(s, s, "X", "equity") for s in "ABC")
    pack = PricingPack(id="PP_H", securities=securities, closes=closes)
    s = Store("sqlite://")
    s.create_schema()
    s.put_pack(pack)
    loaded = Store.get_pack(s, "PP_H")
    pd.testing.assert_frame_equal(loaded.closes, closes[["A", "B", "C"]])
    assert loaded.content_hash == pack.content_hash
    s.close()


def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(
            insert(prices).values(pack_id="PP_NONE", date=date(2022, 1, 3), symbol="AAA", close=1.0)
        )


def test_create_schema_is_idempotent(
    home: Path, db_url: str | None, store: Store, pack: PricingPack
) -> None:
    store.put_pack(pack)
    store.create_schema()
    again = open_store()
    again.create_schema()
    assert again.list_packs()[0]["id"] == "PP_T"
    assert (home / DB_FILENAME).is_file() == (db_url is None)
    again.close()


def test_is_empty(store: Store, pack: PricingPack) -> None:
    assert store.is_empty()
    store.put_ratings({"AAA": 5.0}, source="t")
    assert not store.is_empty()


# --- portfolios ----------------------------------------------------------------------------------

PORTFOLIO = Portfolio(
    id="P1",
    cash=Decimal("1234.5678901234567890123"),
    lots=(
        Lot("BBB", 20),
        Lot("AAA", 100, Decimal("9.50"), date(2021, 3, 1)),
        Lot("AAA", 50, Decimal("1E+1"), None),
    ),
    owner="ann",
)


def test_portfolio_round_trip_keeps_decimals_and_lot_order(home: Path, store: Store) -> None:
    store.put_portfolio(PORTFOLIO, description="mine")
    loaded = open_store().get_portfolio("P1")
    assert loaded == PORTFOLIO
    assert str(loaded.cash) == "1234.5678901234567890123"
    assert [str(lot.cost_basis) for lot in loaded.lots] == ["None", "9.50", "1E+1"]
    assert store.list_portfolios() == [
        {
            "id": "P1",
            "owner": "ann",
            "cash": "1234.5678901234567890123",
            "description": "mine",
            "n_lots": 3,
            "n_symbols": 2,
        }
    ]


@settings(max_examples=40, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=0, places=None))
def test_any_cash_amount_round_trips_exactly(cash: Decimal) -> None:
    s = Store("sqlite://")
    s.create_schema()
    s.put_portfolio(Portfolio(id="P", cash=cash))
    assert str(s.get_portfolio("P").cash) == str(cash)
    s.close()


def test_existing_portfolio_needs_replace(row_counts: RowCounts, store: Store) -> None:
    store.put_portfolio(PORTFOLIO)
    before = row_counts(store)
    with pytest.raises(ConflictError, match="--replace"):
        store.put_portfolio(Portfolio(id="P1", cash=Decimal("1")))
    assert row_counts(store) == before
    store.put_portfolio(Portfolio(id="P1", cash=Decimal("1"), lots=(Lot("CCC", 7),)), replace=True)
    assert store.get_portfolio("P1") == Portfolio(id="P1", cash=Decimal("1"), lots=(Lot("CCC", 7),))


def test_a_failed_replace_keeps_the_old_portfolio(store: Store) -> None:
    store.put_portfolio(PORTFOLIO)
    fail_on(store, "INSERT INTO lots")
    with pytest.raises(RuntimeError, match="injected"):
        store.put_portfolio(
            Portfolio(id="P1", cash=Decimal("1"), lots=(Lot("CCC", 7),)), replace=True
        )
    assert store.get_portfolio("P1") == PORTFOLIO


def test_unknown_portfolio_names_no_other_portfolio(store: Store) -> None:
    store.put_portfolio(PORTFOLIO)
    with pytest.raises(NotFoundError, match="P2") as exc:
        store.get_portfolio("P2")
    assert "P1" not in str(exc.value.to_dict())  # ids of other portfolios never leak


# --- ratings, policies, proposals ----------------------------------------------------------------


def test_ratings_upsert_and_sort(store: Store) -> None:
    store.put_ratings({"BBB": 3.0, "AAA": 7.5}, source="first")
    store.put_ratings({"AAA": 8.0, "CCC": 1.0}, source="second")
    assert list(store.get_ratings().items()) == [("AAA", 8.0), ("BBB", 3.0), ("CCC", 1.0)]


def test_out_of_range_ratings_are_refused(store: Store) -> None:
    with pytest.raises(InputError, match="AAA"):
        store.put_ratings({"AAA": 11.0, "BBB": 5.0}, source="t")
    assert store.get_ratings() == {}


def test_policy_templates(store: Store) -> None:
    store.put_policy_template(
        "T1", "1", "first", {"method": "min_variance", "commission_per_trade": "1.50"}
    )
    store.put_policy_template("T0", "2", "zero", {})
    overrides, version = store.get_policy_template("T1")
    assert version == "1"
    assert overrides.method == "min_variance"
    assert overrides.commission_per_trade == Decimal("1.50")
    assert [p["id"] for p in store.list_policies()] == ["T0", "T1"]
    assert store.list_policies()[1]["policy"] == {
        "commission_per_trade": "1.50",
        "method": "min_variance",
    }
    store.put_policy_template("T1", "3", "changed", {"method": "hrp"})
    assert store.get_policy_template("T1")[0].method == "hrp"


def test_invalid_policy_template_writes_nothing(store: Store) -> None:
    with pytest.raises(InputError, match="max_single_position_pct"):
        store.put_policy_template("T1", "1", "", {"max_single_position_pct": 150})
    with pytest.raises(InputError, match="unknown field"):
        store.put_policy_template("T1", "1", "", {"max_position": 10})
    assert store.list_policies() == []


def test_unknown_policy_lists_valid_ids(store: Store) -> None:
    store.put_policy_template("T1", "1", "", {})
    with pytest.raises(NotFoundError, match="valid ids: T1"):
        store.get_policy_template("T9")


def test_proposal_history(store: Store) -> None:
    ids = [
        store.record_proposal(
            capability="optimizer.propose_trades",
            portfolio_id="P1",
            pricing_pack_id="PP_T",
            policy_id=None,
            inputs_hash=f"h{i}",
            result_json=f'{{"n": {i}}}',
        )
        for i in range(3)
    ]
    assert ids == sorted(ids) and len(set(ids)) == 3
    recent = store.list_proposals(limit=2)
    assert [r["inputs_hash"] for r in recent] == ["h2", "h1"]
    assert recent[0]["result_json"] == '{"n": 2}'
    assert recent[0]["created_at"].endswith("+00:00")


# --- seeding -------------------------------------------------------------------------------------


def test_seed_from_a_seed_directory(
    row_counts: RowCounts, store: Store, tiny_seed_root: Path
) -> None:
    summary = seed(store, tiny_seed_root)
    assert summary == {
        "packs": {"added": ["PP_TEST"], "present": []},
        "ratings": {"added": ["AAA", "BBB"], "present": []},
        "policies": {"added": ["T_CAPPED", "T_PLAIN"], "present": []},
        "portfolios": {"added": ["P_ONE"], "present": []},
    }
    portfolio = store.get_portfolio("P_ONE")
    assert portfolio.cash == Decimal("1000.50") and portfolio.positions() == {"AAA": 150, "BBB": 20}
    assert store.get_policy_template("T_CAPPED")[0].commission_per_trade == Decimal("1.50")
    before = row_counts(store)
    again = seed(store, tiny_seed_root)
    assert all(kind["added"] == [] for kind in again.values())
    assert again["portfolios"]["present"] == ["P_ONE"]
    assert row_counts(store) == before


def test_a_broken_seed_set_writes_nothing(
    row_counts: RowCounts, write: Write, store: Store, tiny_seed_root: Path
) -> None:
    write(tiny_seed_root / "portfolios" / "P_ONE.csv", "symbol,shares\nAAA,10\nIDX,1\n")
    before = row_counts(store)
    with pytest.raises(InputError, match="P_ONE.csv") as exc:
        seed(store, tiny_seed_root)
    assert exc.value.details["problems"][0]["rule"] == "index_not_holdable"
    assert row_counts(store) == before


def test_an_invalid_seed_template_names_itself(
    row_counts: RowCounts, write: Write, store: Store, tiny_seed_root: Path
) -> None:
    templates = {
        "version": 1,
        "templates": [
            {"id": "T_BAD", "method_version": "1", "description": "", "policy": {"method": "magic"}}
        ],
    }
    write(tiny_seed_root / "policy_templates.json", json.dumps(templates))
    with pytest.raises(InputError, match="T_BAD"):
        seed(store, tiny_seed_root)
    assert row_counts(store) == dict.fromkeys(row_counts(store), 0)


def test_seed_file_readers(tiny_seed_root: Path) -> None:
    defaults = load_constraint_defaults(tiny_seed_root)
    assert defaults == {
        "commission_per_trade": Decimal("5.00"),
        "market_impact_bps": 15.0,
        "min_trade_value": Decimal("100"),
        "risk_free_rate": 0.02,
        "annualization_days": 252,
    }
    assert load_benchmarks(tiny_seed_root) == {"B1": {"AAA": 0.4, "CCC": 0.6}}


def test_the_packaged_seed_files_are_valid(seeded_store: Store) -> None:
    defaults = load_constraint_defaults()
    assert isinstance(defaults["commission_per_trade"], Decimal) and "version" not in defaults
    benchmarks = load_benchmarks()
    pack = seeded_store.get_pack(seeded_store.list_packs()[0]["id"])
    for name, weights in benchmarks.items():
        assert set(weights) <= set(pack.symbols), name
    for p in seeded_store.list_portfolios():
        assert set(seeded_store.get_portfolio(p["id"]).positions()) <= set(pack.symbols)
    assert seeded_store.list_policies() and seeded_store.get_ratings()
