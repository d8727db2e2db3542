"""Booking approved trades: arithmetic to the cent, FIFO lots, versions, history, one transaction."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import services.data.store as store_module
from capabilities.base import RequestContext
from services.data.models import Lot, Portfolio
from services.data.policy import Policy
from services.errors import ConflictError, InputError
from services.lifecycle.booking import Order, book

PACK = "PP_2022-12-28"
CENT = Decimal("0.01")
SYMBOLS = ("AAPL", "JNJ", "KO", "XOM")


def _cost(value: Decimal) -> Decimal:
    # $5 commission + 15 bps of the value, each to the cent (the policy defaults).
    return Decimal("5.00") + (value * Decimal(15) / Decimal(10000)).quantize(CENT, ROUND_HALF_UP)


@pytest.fixture(scope="module")
def pack(module_store):
    return module_store.get_pack(PACK)


def test_fifo_by_hand(pack) -> None:
    # Three KO lots; the undated one counts as oldest, then 2020 before 2021.
    before = Portfolio(id="p", cash=Decimal("1000.00"), lots=(
        Lot("KO", 100, Decimal("40"), date(2021, 1, 4)),
        Lot("KO", 50, Decimal("45"), None),
        Lot("KO", 30, Decimal("50"), date(2020, 1, 2)),
    ))
    booking = book(pack, before, [Order("KO", "SELL", 60), Order("AAPL", "BUY", 10)], Policy())
    # Sold: 50 undated + 10 of the 2020 lot. KO closes at 62.609: 60 × 62.609 = 3,756.54.
    # AAPL 10 × 125.674 = 1,256.74. Costs 5 + 5.63 and 5 + 1.89.
    assert [(lot.symbol, lot.shares, lot.acquired) for lot in booking.after.lots] == [
        ("KO", 100, date(2021, 1, 4)), ("KO", 20, date(2020, 1, 2)), ("AAPL", 10, date(2022, 12, 28))]
    assert booking.estimated_costs == Decimal("17.52")
    assert booking.cash_after == Decimal("1000.00") - Decimal("1256.74") + Decimal("3756.54") - Decimal("17.52")
    # Basis of the new lot: (1,256.74 + 6.89) / 10 per share.
    assert booking.after.lots[-1].cost_basis == Decimal("126.3630")


def test_insufficient_cash_names_the_shortfall(pack) -> None:
    before = Portfolio(id="p", cash=Decimal("100.00"))
    with pytest.raises(InputError) as err:
        book(pack, before, [Order("AAPL", "BUY", 1)], Policy())
    # 125.67 + 5.19 cost − 100 = 30.86 short.
    assert err.value.details["shortfall"] == 30.86
    with pytest.raises(InputError, match="sell 5 but 0 held"):
        book(pack, before, [Order("KO", "SELL", 5)], Policy())


lots_strategy = st.lists(
    st.tuples(st.sampled_from(SYMBOLS), st.integers(1, 500),
              st.one_of(st.none(), st.dates(date(2015, 1, 1), date(2022, 12, 1)))),
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lots=lots_strategy, cash=st.integers(0, 500_000), data=st.data())
def test_booking_arithmetic_to_the_cent(pack, lots, cash, data) -> None:
    before = Portfolio(id="p", cash=Decimal(cash) / 100 * 100,
                       lots=tuple(Lot(s, n, None, d) for s, n, d in lots))
    held = before.positions()
    orders = []
    for sym in SYMBOLS:
        side = data.draw(st.sampled_from(["BUY", "SELL", None]))
        if side == "SELL" and held.get(sym):
            orders.append(Order(sym, "SELL", data.draw(st.integers(1, held[sym]))))
        elif side == "BUY":
            orders.append(Order(sym, "BUY", data.draw(st.integers(1, 300))))
    prices = pack.last_prices()
    value = {o.symbol: (o.quantity * Decimal(repr(prices[o.symbol]))).quantize(CENT, ROUND_HALF_UP) for o in orders}
    buys = sum((value[o.symbol] for o in orders if o.side == "BUY"), Decimal(0))
    sells = sum((value[o.symbol] for o in orders if o.side == "SELL"), Decimal(0))
    costs = sum((_cost(v) for v in value.values()), Decimal(0))
    expected_cash = before.cash - buys + sells - costs
    if expected_cash < 0:
        with pytest.raises(InputError):
            book(pack, before, orders, Policy())
        return
    booking = book(pack, before, orders, Policy())
    assert booking.cash_after == expected_cash
    assert booking.estimated_costs == costs and booking.total_trade_value == buys + sells
    expected = dict(held)
    for o in orders:
        expected[o.symbol] = expected.get(o.symbol, 0) + (o.quantity if o.side == "BUY" else -o.quantity)
    assert booking.after.positions() == {s: n for s, n in sorted(expected.items()) if n}
    for sym in SYMBOLS:
        # FIFO: what is left of the lots held before is their newest part.
        old = [lot for lot in before.lots if lot.symbol == sym]
        ordered = sorted(range(len(old)), key=lambda i: (old[i].acquired is not None, old[i].acquired or date.min, i))
        sold = sum(o.quantity for o in orders if o.symbol == sym and o.side == "SELL")
        left_expected = []
        for i in ordered:
            take = min(sold, old[i].shares)
            sold -= take
            if old[i].shares - take:
                left_expected.append((i, old[i].shares - take))
        # Lots held before have no basis here; lots opened by the booking always have one.
        kept = [lot for lot in booking.after.lots if lot.symbol == sym and lot.cost_basis is None]
        assert sorted(lot.shares for lot in kept) == sorted(n for _, n in left_expected)


def _propose_and_book(agent, decision=None, policy_id="aggressive_growth", ctx=None):
    proposal = agent.execute("optimizer.propose_trades", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": policy_id,
        "policy": {"method": "target"}})
    request = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "trades": proposal["trades"],
               "policy_id": policy_id}
    if decision is not None:
        request["decision"] = decision
    return proposal, agent.execute("optimizer.book_trades", request, ctx, allow_writes=True)


@pytest.fixture
def targeted(agent):
    agent.store.put_target("demo_diversified", {"AAPL": 10.0, "MSFT": 10.0, "XOM": 7.0, "JNJ": 7.0, "KO": 6.0,
                                                "PG": 6.0, "UNH": 8.0, "JPM": 6.0, "WMT": 6.0, "HD": 5.0,
                                                "CVX": 5.0, "LLY": 5.0, "PEP": 4.0, "MRK": 4.0, "BAC": 4.0,
                                                "PFE": 3.0, "AMD": 2.0}, policy_id="aggressive_growth", source="test")
    return agent


def test_booking_a_proposal_matches_it_and_keeps_the_old_version(targeted) -> None:
    agent = targeted
    original = agent.store.get_portfolio("demo_diversified")
    proposal, booked = _propose_and_book(agent, {"status": "approved", "by": "alice", "note": "ok"},
                                         ctx=RequestContext(trace_id="run-1"))
    assert (booked["status"], booked["version_before"], booked["version_after"]) == ("booked", 1, 2)
    after = agent.store.get_portfolio("demo_diversified")
    assert after.positions() == {t["symbol"]: t["target_shares"] for t in proposal["trades"] if t["target_shares"]}
    assert after.cash == Decimal(str(booked["cash_after"]))
    # The proposal's own cash figure rounds the sum once; the booking sums cent-rounded trades.
    assert abs(after.cash - Decimal(str(proposal["cash_after"]))) <= Decimal("0.01") * len(proposal["trades"])
    assert booked["estimated_costs"] == proposal["estimated_costs"]
    assert agent.store.get_portfolio_version("demo_diversified", 1) == original
    assert agent.store.get_portfolio_version("demo_diversified", 2) == after
    history = agent.store.list_rebalances("demo_diversified")
    assert [(h["status"], h["approved_by"], h["note"], h["run_id"]) for h in history] == [
        ("booked", "alice", "ok", "run-1")]
    assert agent.store.last_booked_asof("demo_diversified") == date(2022, 12, 28)
    # Drift is gone: the next check finds nothing due.
    drift = agent.execute("optimizer.check_drift", {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK})
    assert drift["rebalance_due"] is False, drift["explanation"]


def test_rejection_books_nothing_and_history_counts_approvals(targeted) -> None:
    agent = targeted
    before = agent.store.get_portfolio("demo_diversified")
    _, rejected = _propose_and_book(agent, {"status": "rejected", "by": "bob", "note": "too much turnover"})
    assert (rejected["status"], rejected["version_after"]) == ("rejected", None)
    assert agent.store.get_portfolio("demo_diversified") == before
    assert agent.store.last_booked_asof("demo_diversified") is None
    _, booked = _propose_and_book(agent, {"status": "approved", "by": "bob"})
    _, again = _propose_and_book(agent, {"status": "approved", "by": "bob"})  # a few small trades
    statuses = [h["status"] for h in agent.store.list_rebalances("demo_diversified")]
    assert statuses == ["rejected", "booked", "booked"]
    assert (booked["version_after"], again["version_before"], again["version_after"]) == (2, 2, 3)


def test_a_stale_proposal_is_refused(targeted) -> None:
    agent = targeted
    proposal = agent.execute("optimizer.propose_trades", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "aggressive_growth",
        "policy": {"method": "target"}})
    request = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "trades": proposal["trades"],
               "policy_id": "aggressive_growth", "decision": {"status": "approved", "by": "pm"}}
    agent.execute("optimizer.book_trades", request, allow_writes=True)
    before = agent.store.get_portfolio("demo_diversified")
    store = agent.store
    with pytest.raises(ConflictError):
        # Booking the same trades again against the stored portfolio read before the first booking.
        store.book_rebalance(store.get_portfolio_version("demo_diversified", 1), before,
                             {"status": "booked", "pricing_pack_id": PACK, "asof": date(2022, 12, 28), "details": {}})
    assert store.get_portfolio("demo_diversified") == before


def test_booking_checks_the_trading_rules_again(pack) -> None:
    before = Portfolio(id="p", cash=Decimal("10000.00"), lots=(Lot("KO", 100, Decimal("40"), None),
                                                               Lot("XOM", 10, Decimal("50"), None)))
    # Each rule names its symbol; all problems are listed at once.
    with pytest.raises(InputError) as err:
        book(pack, before, [Order("AAPL", "BUY", 1), Order("KO", "SELL", 10), Order("JNJ", "BUY", 1)],
             Policy(restricted_symbols=["AAPL"]), frozen=frozenset({"KO"}), restricted=frozenset({"JNJ"}))
    assert err.value.details["problems"] == [
        "AAPL: restricted (never bought)", "KO: frozen (never traded)", "JNJ: restricted (never bought)"]
    # A restricted holding may still be sold; only buying it is refused.
    sold = book(pack, before, [Order("XOM", "SELL", 10)], Policy(), restricted=frozenset({"XOM"}))
    assert sold.after.positions() == {"KO": 100}


def test_a_restriction_set_after_the_proposal_stops_its_booking(targeted) -> None:
    agent = targeted
    proposal = agent.execute("optimizer.propose_trades", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "aggressive_growth",
        "policy": {"method": "target"}})
    bought = sorted(t["symbol"] for t in proposal["trades"] if t["action"] == "BUY")
    assert bought, "the drifted portfolio buys something toward its target"
    agent.store.set_restrictions("demo_diversified", restricted=[bought[0]], frozen=[])
    before = agent.store.get_portfolio("demo_diversified")
    with pytest.raises(InputError, match=f"{bought[0]}: restricted"):
        agent.execute("optimizer.book_trades", {
            "portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "trades": proposal["trades"],
            "policy_id": "aggressive_growth", "decision": {"status": "approved", "by": "pm"}}, allow_writes=True)
    assert agent.store.get_portfolio("demo_diversified") == before
    assert agent.store.list_rebalances("demo_diversified") == []


@pytest.mark.parametrize("crash_at", ["_keep_version", "_replace_holdings"])
def test_a_crash_between_booking_steps_leaves_no_partial_version(targeted, monkeypatch, crash_at) -> None:
    agent = targeted
    store = agent.store
    before = store.get_portfolio("demo_diversified")
    real = getattr(store_module, crash_at)
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        # _keep_version: crash on the second call, after the holdings were replaced.
        if crash_at == "_replace_holdings" or calls["n"] == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, crash_at, crashing)
    with pytest.raises(OSError):
        _propose_and_book(agent, {"status": "approved"})
    assert calls["n"] >= 1
    assert store.get_portfolio("demo_diversified") == before
    assert store.list_rebalances("demo_diversified") == []
    assert store.portfolio_version("demo_diversified") == 1
    with store.engine.connect() as conn:
        from sqlalchemy import func, select
        assert conn.execute(select(func.count()).select_from(store_module.portfolio_versions)).scalar_one() == 0


def test_a_portfolio_reimported_after_a_booking_becomes_its_own_version(targeted) -> None:
    agent = targeted
    store = agent.store
    _propose_and_book(agent, {"status": "approved", "by": "pm"})
    booked = store.get_portfolio("demo_diversified")
    reimported = Portfolio(id="demo_diversified", cash=Decimal("1000.00"), lots=(Lot("KO", 100),), owner=booked.owner)
    store.put_portfolio(reimported, replace=True)
    result = agent.execute("optimizer.book_trades", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": PACK,
        "trades": [{"symbol": "KO", "action": "SELL", "quantity": 10}]}, allow_writes=True)
    assert (result["version_before"], result["version_after"]) == (3, 4)
    assert store.get_portfolio_version("demo_diversified", 2) == booked
    assert store.get_portfolio_version("demo_diversified", 3) == reimported
    assert store.get_portfolio("demo_diversified").positions() == {"KO": 90}


def test_booking_is_not_a_direct_call_and_needs_approval_above_the_threshold(targeted) -> None:
    agent = targeted
    before = agent.store.get_portfolio("demo_diversified")
    proposal = agent.execute("optimizer.propose_trades", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "aggressive_growth",
        "policy": {"method": "target"}})
    request = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "trades": proposal["trades"],
               "policy_id": "aggressive_growth"}
    with pytest.raises(InputError, match="only as a step of a pattern"):
        agent.execute("optimizer.book_trades", request)
    assert proposal["total_trade_value"] > 10_000
    with pytest.raises(InputError, match="exceed the approval threshold") as err:
        agent.execute("optimizer.book_trades", request, allow_writes=True)
    assert err.value.details["field"] == "decision"
    assert agent.store.get_portfolio("demo_diversified") == before
