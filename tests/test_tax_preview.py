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


GOLDEN = ("tax_short_term_gain_avoided", "tax_forced_sale_short_term_gain", "tax_harvest_with_replacement")


@pytest.mark.parametrize("case", GOLDEN)
def test_the_tax_golden_files_agree_with_a_calculation_from_the_seed_lots(case) -> None:
    """Every lot row and total of the golden files, recomputed from the seed CSV and the pack's closes."""
    import csv
    import json
    from datetime import date
    from pathlib import Path

    from services.data.seeds import seed_root

    root = Path(__file__).parent / "golden" / "optimizer" / case
    expected = json.loads((root / "expected.json").read_text())
    seed = seed_root() / "portfolios" / "demo_diversified.csv"
    lots = list(csv.DictReader(seed.read_text().splitlines()))
    prices = {t["symbol"]: Decimal(repr(t["price"])) for t in expected["trades"]}
    tax = expected["tax"]
    gains = {"short": [Decimal(0), Decimal(0)], "long": [Decimal(0), Decimal(0)]}
    total_tax = Decimal(0)
    for row in tax["lots_sold"]:
        lot = lots[row["lot_no"] - 1]
        assert lot["symbol"] == row["symbol"]
        held = (date(2022, 12, 28) - date.fromisoformat(lot["acquired"])).days
        term = "long" if held > 365 else "short"
        gain = ((row["shares"] * prices[row["symbol"]]).quantize(CENT, ROUND_HALF_UP)
                - (row["shares"] * Decimal(lot["cost_basis"])).quantize(CENT, ROUND_HALF_UP))
        assert (row["term"], Decimal(repr(row["gain"]))) == (term, gain)
        gains[term][0 if gain > 0 else 1] += abs(gain)
        total_tax += (gain * Decimal("0.37" if term == "short" else "0.20")).quantize(CENT, ROUND_HALF_UP)
    sold = {t["symbol"]: t["quantity"] for t in expected["trades"] if t["action"] == "SELL"}
    assert sold == {r["symbol"]: r["shares"] for r in tax["lots_sold"]}  # one lot per symbol here
    t = tax["totals"]
    assert Decimal(repr(t["short_term_gains"])) == gains["short"][0]
    assert Decimal(repr(t["long_term_gains"])) == gains["long"][0]
    assert Decimal(repr(t["long_term_losses"])) == gains["long"][1]
    assert Decimal(repr(t["estimated_tax"])) == total_tax
    short_term_sold = [r["symbol"] for r in tax["lots_sold"] if r["term"] == "short" and r["gain"] > 0]
    if case == "tax_short_term_gain_avoided":
        assert short_term_sold == [] and tax["comparison"]["tax_saved"] > 0
    elif case == "tax_harvest_with_replacement":
        [h] = tax["harvests"]
        amd = next(r for r in tax["lots_sold"] if r["symbol"] == "AMD")
        assert (h["symbol"], h["replacement"], h["shares"]) == ("AMD", "MSFT", amd["shares"])
        assert Decimal(repr(h["loss"])) == -Decimal(repr(amd["gain"])) == Decimal("78325.00")
        assert Decimal(repr(t["tax_saved_by_losses"])) == Decimal("15665.00")  # 20% of the long-term loss
    else:
        assert short_term_sold == tax["short_term_gains_forced"] == ["UNH"]
