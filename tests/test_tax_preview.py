"""The tax preview in propose_trades and analyze_impact results: only for taxable accounts, and
every figure recomputed from the stored lots and the pack's closes."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest

PACK = "PP_2022-12-28"
RATES = {"short_term_pct": 37, "long_term_pct": 20}
CENT = Decimal("0.01")


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


@pytest.fixture(scope="module")
def taxable(agent):
    return agent.execute("optimizer.propose_trades", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "quality_focused",
        "policy": {"tax_rates": RATES}})


def test_a_tax_exempt_account_has_no_tax_section(agent) -> None:
    exempt = agent.execute("optimizer.propose_trades", {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK,
                                                        "policy_id": "quality_focused"})
    assert "tax" not in exempt
    summary = agent.execute("optimizer.propose_trades", {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK,
                                                         "policy_id": "quality_focused", "detail": "summary"})
    assert "tax" not in summary


def test_the_lots_sold_add_up_to_each_sale_and_their_gains_recompute(agent, taxable) -> None:
    lots = agent.store.get_portfolio("demo_diversified").lots
    tax = taxable["tax"]
    assert tax["basis"] == "estimate" and "not tax advice" in tax["disclaimer"]
    sells = {t["symbol"]: t for t in taxable["trades"] if t["action"] == "SELL"}
    assert sells, "the demo rebalance sells something"
    for sym, trade in sells.items():
        assert sum(r["shares"] for r in tax["lots_sold"] if r["symbol"] == sym) == trade["quantity"]
    total_tax = Decimal(0)
    for row in tax["lots_sold"]:
        lot = lots[row["lot_no"] - 1]
        assert lot.symbol == row["symbol"] and row["shares"] <= lot.shares
        price = Decimal(repr(sells[row["symbol"]]["price"]))
        proceeds = (row["shares"] * price).quantize(CENT, ROUND_HALF_UP)
        basis = (row["shares"] * lot.cost_basis).quantize(CENT, ROUND_HALF_UP)
        assert Decimal(repr(row["gain"])) == proceeds - basis
        long = (date_of(PACK) - lot.acquired).days > 365
        assert row["term"] == ("long" if long else "short")
        rate = Decimal("0.20") if long else Decimal("0.37")
        tax_row = ((proceeds - basis) * rate).quantize(CENT, ROUND_HALF_UP)
        assert Decimal(repr(row["estimated_tax"])) == tax_row
        total_tax += tax_row
    assert Decimal(repr(tax["totals"]["estimated_tax"])) == total_tax


def date_of(pack_id: str):
    from datetime import date

    return date.fromisoformat(pack_id.removeprefix("PP_"))


def test_analyze_impact_previews_the_same_tax_for_the_same_trades(agent, taxable) -> None:
    impact = agent.execute("optimizer.analyze_impact", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "proposed_trades": taxable["trades"],
        "tax_rates": RATES})
    # The same lots and figures; the tax-aware/tax-blind comparison belongs to the optimization only.
    assert impact["tax"] == {k: v for k, v in taxable["tax"].items() if k != "comparison"}
    summary = agent.execute("optimizer.propose_trades", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "quality_focused",
        "policy": {"tax_rates": RATES}, "detail": "summary"})
    assert summary["tax"]["totals"] == taxable["tax"]["totals"]


def test_fifo_in_analyze_impact_takes_the_oldest_lot(agent) -> None:
    # demo_quality holds one XOM lot: 200 shares at 57.36 bought 2019-12-30 (long-term).
    impact = agent.execute("optimizer.analyze_impact", {
        "portfolio_id": "demo_quality", "pricing_pack_id": PACK, "tax_rates": RATES, "lot_selection": "fifo",
        "proposed_trades": [{"symbol": "XOM", "action": "SELL", "quantity": 50}]})
    price = Decimal(repr(agent.store.get_pack(PACK).last_prices()["XOM"]))
    gain = (50 * price).quantize(CENT, ROUND_HALF_UP) - Decimal("2868.00")
    [row] = impact["tax"]["lots_sold"]
    assert (row["lot_no"], row["term"], Decimal(repr(row["gain"]))) == (3, "long", gain)
