"""Trading costs, computed by hand."""

from __future__ import annotations

from decimal import Decimal

from services.allocation.costs import to_decimal, trade_cost


def test_spec_example_selling_100_aapl_at_232_50() -> None:
    # 100 × 232.50 = 23,250.00; 15 bps = 34.875 → 34.88 (half up); + $5.00 = $39.88 (0.17%).
    cost = trade_cost(Decimal(100) * Decimal("232.50"), Decimal("5.00"), 15)
    assert cost == Decimal("39.88")
    assert round(cost / Decimal("23250.00") * 100, 2) == Decimal("0.17")


def test_sign_of_the_trade_does_not_matter() -> None:
    assert trade_cost(Decimal("-23250.00"), Decimal("5.00"), 15) == Decimal("39.88")


def test_no_trade_costs_nothing_not_even_commission() -> None:
    assert trade_cost(Decimal(0), Decimal("5.00"), 15) == Decimal("0.00")


def test_impact_rounds_half_up_to_cents() -> None:
    # 1,000.30 × 25 bps = 2.50075 → 2.50; 1,000.20 × 25 bps = 2.5005 → 2.50; 1,002 × 25 bps = 2.505 → 2.51
    assert trade_cost(Decimal("1000.30"), Decimal("0"), 25) == Decimal("2.50")
    assert trade_cost(Decimal("1002"), Decimal("0"), 25) == Decimal("2.51")


def test_float_prices_become_their_shortest_decimal() -> None:
    assert to_decimal(125.674) == Decimal("125.674")
    assert to_decimal(0.1) == Decimal("0.1")
