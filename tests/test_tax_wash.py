"""The wash-sale rule: the 30-day window (day 30 in, day 31 out), blocks from lots and booked
history, blocks as constraints of the proposal, and booking that closes the lots the preview showed."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from services.data.models import Lot
from services.tax.lots import TaxLot, TaxSettings, numbered, sale_order
from services.tax.wash import BookedBuy, BookedSale, WashHistory, wash_sale_blocks

ASOF = date(2022, 12, 28)
PACK = "PP_2022-12-28"
RATES = {"short_term_pct": 37, "long_term_pct": 20}
D = Decimal


def _loss_sale(days_before: int) -> BookedSale:
    # 10 XOM bought at 120, sold at 100: a loss.
    when = ASOF - timedelta(days=days_before)
    return BookedSale("XOM", when, 10, D("100"), (Lot("XOM", 10, D("120"), date(2020, 1, 2)),))


@pytest.mark.parametrize(("days", "blocked"), [(0, True), (30, True), (31, False)])
def test_a_loss_sale_blocks_purchases_through_day_30(days, blocked) -> None:
    blocks = wash_sale_blocks(ASOF, (), (_loss_sale(days),), ())
    if not blocked:
        assert blocks == []
        return
    [b] = blocks
    sold = ASOF - timedelta(days=days)
    assert (b.symbol, b.rule, b.since, b.until) == ("XOM", "no_purchase", sold.isoformat(),
                                                    (sold + timedelta(days=30)).isoformat())


def test_a_sale_at_a_gain_blocks_nothing() -> None:
    gain = BookedSale("XOM", ASOF - timedelta(days=3), 10, D("100"), (Lot("XOM", 10, D("80"), date(2020, 1, 2)),))
    assert wash_sale_blocks(ASOF, (), (gain,), ()) == []


def test_the_lots_the_booked_sale_closed_decide_whether_it_was_a_loss() -> None:
    lots = (Lot("XOM", 10, D("80"), date(2019, 1, 2)), Lot("XOM", 10, D("130"), date(2021, 1, 2)))
    fifo = BookedSale("XOM", ASOF, 10, D("100"), lots)  # closes the 80 lot: a gain
    hifo = BookedSale("XOM", ASOF, 10, D("100"), lots, TaxSettings(D("0.37"), D("0.2"), lot_selection="hifo"))
    assert wash_sale_blocks(ASOF, (), (fifo,), ()) == []
    assert [b.rule for b in wash_sale_blocks(ASOF, (), (hifo,), ())] == ["no_purchase"]


@pytest.mark.parametrize(("days", "blocked"), [(30, True), (31, False)])
def test_a_purchase_blocks_loss_sales_through_day_30(days, blocked) -> None:
    bought = ASOF - timedelta(days=days)
    from_lot = wash_sale_blocks(ASOF, (TaxLot(1, "KO", 5, D("90"), bought),), (), ())
    from_history = wash_sale_blocks(ASOF, (), (), (BookedBuy("KO", bought),))
    assert from_lot == from_history
    assert [(b.rule, b.until) for b in from_lot] == ([("no_loss_sale", (bought + timedelta(days=30)).isoformat())]
                                                    if blocked else [])


def test_a_blocked_name_offers_only_its_lots_without_a_loss() -> None:
    lots = numbered((Lot("KO", 5, D("90"), ASOF), Lot("KO", 5, D("50"), date(2020, 1, 2)),
                     Lot("KO", 5, D("70"), date(2022, 12, 20))))
    settings = TaxSettings(D("0.37"), D("0.2"), no_loss_sales=frozenset({"KO"}))
    assert [lot.lot_no for lot in sale_order(lots, "KO", D("60"), ASOF, settings)] == [2]


# --- as a constraint of the proposal --------------------------------------------------------------


@pytest.fixture(scope="module")
def gains(module_store):
    from services.allocation.rebalance import Holdings
    from services.data.seeds import load_constraint_defaults

    lots = (Lot("XOM", 400, D("30"), date(2019, 1, 2)), Lot("JNJ", 150, D("60"), date(2018, 1, 2)),
            Lot("PG", 200, D("70"), date(2019, 5, 1)), Lot("KO", 300, D("40"), date(2022, 9, 1)),
            Lot("MSFT", 100, D("200"), date(2017, 1, 1)))
    holdings = Holdings("gains", {lot.symbol: lot.shares for lot in lots}, D("5000"))
    return module_store.get_pack(PACK), holdings, lots, load_constraint_defaults()


def _propose(gains, history):
    from services.allocation.rebalance import propose_trades
    from services.data.policy import PolicyOverrides, resolve_policy

    pack, holdings, lots, defaults = gains
    policy = resolve_policy(defaults, None, PolicyOverrides.model_validate(
        {"universe": "holdings", "max_single_position_pct": 45, "method": "max_sharpe", "tax_rates": RATES}),
        policy_id=None)
    return propose_trades(pack, holdings, policy, {}, {}, lots=lots, wash_history=history)


def test_a_name_sold_at_a_loss_is_not_bought_and_the_block_is_listed(gains) -> None:
    free = _propose(gains, None)
    assert any(t.symbol == "XOM" and t.action == "BUY" for t in free.trades)
    blocked = _propose(gains, WashHistory(sales=(_loss_sale(10),)))
    assert not any(t.symbol == "XOM" and t.action == "BUY" for t in blocked.trades)
    [b] = [b for b in blocked.tax.wash_sale_blocks if b.symbol == "XOM"]
    assert (b.rule, b.until) == ("no_purchase", "2023-01-17")
    assert blocked.constraints_met


def test_booking_a_taxable_sale_closes_the_lots_the_preview_showed(agent) -> None:
    from services.data.models import Portfolio

    lots = (Lot("XOM", 10, D("30"), date(2019, 1, 2)), Lot("XOM", 10, D("150"), date(2020, 1, 2)))
    agent.store.put_portfolio(Portfolio("taxed", D("0"), lots))
    request = {"portfolio_id": "taxed", "pricing_pack_id": PACK,
               "proposed_trades": [{"symbol": "XOM", "action": "SELL", "quantity": 10}], "tax_rates": RATES}
    preview = agent.execute("optimizer.analyze_impact", request)["tax"]
    assert [r["lot_no"] for r in preview["lots_sold"]] == [2]  # the loss lot: least tax
    agent.execute("optimizer.book_trades", {"portfolio_id": "taxed", "pricing_pack_id": PACK,
                                            "trades": request["proposed_trades"], "policy": {"tax_rates": RATES}},
                  allow_writes=True)
    assert [(lot.shares, lot.cost_basis) for lot in agent.store.get_portfolio("taxed").lots] == [(10, D("30"))]
    # The booked loss now blocks buying XOM back, from the booked history.
    after = agent.execute("optimizer.analyze_impact", {
        "portfolio_id": "taxed", "pricing_pack_id": PACK, "tax_rates": RATES,
        "proposed_trades": [{"symbol": "XOM", "action": "BUY", "quantity": 1}]})
    assert [(b["symbol"], b["rule"], b["until"]) for b in after["tax"]["wash_sale_blocks"]] == [
        ("XOM", "no_purchase", "2023-01-27")]
    assert any("wash sale" in w for w in after["tax"]["warnings"])
