"""Tax lots: holding terms, lot selection and the tax preview, against hand-computed figures."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.errors import InputError
from services.tax.lots import TaxLot, TaxSettings, sale_order, take
from services.tax.preview import Sale, preview

ASOF = date(2022, 12, 28)
D = Decimal


def _settings(**kw) -> TaxSettings:
    return TaxSettings(short_rate=D("0.37"), long_rate=D("0.20"), **kw)


# Three lots of A at a price of 100: a long-term gain, a long-term loss, a short-term gain.
THREE = (
    TaxLot(1, "A", 10, D("50"), date(2020, 1, 1)),
    TaxLot(2, "A", 10, D("120"), date(2021, 6, 1)),
    TaxLot(3, "A", 10, D("90"), date(2022, 10, 1)),
)


def _sell(lots, quantity, **kw):
    return preview(lots, [Sale("A", quantity, D("100"))], _settings(**kw), ASOF)


def test_fifo_takes_the_oldest_lots() -> None:
    # lot 1: 10 × (100 − 50) = +500 long; lot 2: 5 × (100 − 120) = −100 long.
    out = _sell(THREE, 15, lot_selection="fifo")
    assert [(r.lot_no, r.shares, r.gain, r.term) for r in out.lots_sold] == [(1, 10, D("500.00"), "long"),
                                                                            (2, 5, D("-100.00"), "long")]
    assert out.totals.long_term_gains == D("500.00") and out.totals.long_term_losses == D("100.00")
    assert out.totals.estimated_tax == D("80.00")  # 0.20 × 500 − 0.20 × 100


def test_hifo_takes_the_highest_basis_first() -> None:
    # lot 2: 10 × −20 = −200 long (−40 tax); lot 3: 5 × 10 = +50 short (+18.50 tax).
    out = _sell(THREE, 15, lot_selection="hifo")
    assert [(r.lot_no, r.shares, r.gain, r.term, r.estimated_tax) for r in out.lots_sold] == [
        (2, 10, D("-200.00"), "long", D("-40.00")), (3, 5, D("50.00"), "short", D("18.50"))]
    assert out.totals.estimated_tax == D("-21.50")
    assert out.totals.tax_saved_by_losses == D("40.00")


def test_optimal_avoids_short_term_gains_then_minimizes_tax() -> None:
    # Tax per share: lot 1 +10.00, lot 2 −4.00, lot 3 +3.70 but a short-term gain (avoided: last).
    avoiding = _sell(THREE, 15)
    assert [(r.lot_no, r.shares) for r in avoiding.lots_sold] == [(1, 5), (2, 10)]
    assert avoiding.totals.estimated_tax == D("10.00")  # −40 + 0.20 × 250
    assert avoiding.warnings == []
    cheapest = _sell(THREE, 15, avoid_short_term_gains=False)
    assert [(r.lot_no, r.shares) for r in cheapest.lots_sold] == [(2, 10), (3, 5)]
    assert cheapest.totals.estimated_tax == D("-21.50")
    # Selling everything must take the short-term gain; the preview says so.
    assert _sell(THREE, 30).warnings == ["A: the sale realizes a short-term gain although avoid_short_term_gains is set"]


def test_a_lot_365_days_old_is_short_term_and_366_long_term() -> None:
    lots = (TaxLot(1, "A", 1, D("90"), date(2021, 12, 28)), TaxLot(2, "A", 1, D("90"), date(2021, 12, 27)))
    assert (ASOF - date(2021, 12, 28)).days == 365
    s = _settings()
    assert lots[0].term(ASOF, 365) == "short" and lots[1].term(ASOF, 365) == "long"
    out = preview(lots, [Sale("A", 2, D("100"))], _settings(lot_selection="fifo"), ASOF)
    assert [(r.lot_no, r.term, r.estimated_tax) for r in out.lots_sold] == [(1, "short", D("3.70")),
                                                                           (2, "long", D("2.00"))]
    assert lots[0].term(ASOF, 364) == "long"  # the holding period is the policy's
    assert s.holding_period_days == 365


def test_a_loss_offsets_a_gain_of_the_same_term() -> None:
    lots = (TaxLot(1, "A", 10, D("0"), date(2022, 6, 1)), TaxLot(2, "B", 10, D("140"), date(2022, 7, 1)))
    out = preview(lots, [Sale("A", 10, D("100")), Sale("B", 10, D("100"))], _settings(), ASOF)
    t = out.totals
    assert (t.short_term_gains, t.short_term_losses, t.net_short_term) == (D("1000.00"), D("400.00"), D("600.00"))
    assert t.estimated_tax == D("222.00")  # 0.37 × 600
    assert t.net_realized_gain == D("600.00") and t.long_term_gains == D("0.00")


def test_a_forced_sale_is_named_when_it_realizes_a_short_term_gain() -> None:
    lots = (TaxLot(1, "A", 10, D("90"), date(2022, 10, 1)),)
    out = preview(lots, [Sale("A", 10, D("100"), forced_reason="quality 3.0 below the minimum 5")], _settings(), ASOF)
    assert out.short_term_gains_forced == ["A"]
    assert out.lots_sold[0].forced and out.totals.short_term_gains == D("100.00")


def test_specific_lots_in_the_order_named_and_too_few_is_an_error() -> None:
    out = _sell(THREE, 12, lot_selection="specific", specific_lots=(3, 1))
    assert [(r.lot_no, r.shares) for r in out.lots_sold] == [(1, 2), (3, 10)]
    with pytest.raises(InputError) as err:
        _sell(THREE, 25, lot_selection="specific", specific_lots=(3, 1))
    assert err.value.details["named_shares"] == 20 and "policy.specific_lots" in str(err.value)


def test_unknown_basis_and_date_are_named_not_guessed() -> None:
    lots = (TaxLot(1, "A", 5, None, None),)
    out = _sell(lots, 5)
    row = out.lots_sold[0]
    assert row.gain is None and row.estimated_tax is None and row.term == "short"
    assert out.totals.estimated_tax == D("0.00")
    assert any("no cost basis" in w for w in out.warnings) and any("no acquisition date" in w for w in out.warnings)


lot_strategy = st.lists(
    st.tuples(st.integers(1, 4), st.integers(20, 180), st.integers(0, 900)), min_size=1, max_size=4)


@settings(max_examples=80, deadline=None)
@given(lot_strategy, st.integers(1, 16), st.booleans())
def test_optimal_order_matches_brute_force_enumeration(raw, quantity, avoid) -> None:
    """Over every way to take ``quantity`` shares from the lots, none has less tax (among those
    realizing no more short-term-gain shares, when avoiding them) than the optimal order's."""
    lots = tuple(TaxLot(i, "A", n, D(basis), date.fromordinal(ASOF.toordinal() - age))
                 for i, (n, basis, age) in enumerate(raw, start=1))
    quantity = min(quantity, sum(lot.shares for lot in lots))
    price, s = D("100"), _settings(avoid_short_term_gains=avoid)

    def cost(choice):  # exact tax and short-term-gain shares of taking choice[i] shares of lot i
        tax = sum((n * lot.tax_per_share(price, ASOF, s) for lot, n in zip(lots, choice, strict=True)), D(0))
        st_shares = sum(n for lot, n in zip(lots, choice, strict=True) if lot.short_term_gain(price, ASOF, s))
        return (st_shares, tax) if avoid else (0, tax)

    best = min(cost(c) for c in itertools.product(*(range(lot.shares + 1) for lot in lots)) if sum(c) == quantity)
    taken = dict((lot.lot_no, n) for lot, n in take(sale_order(lots, "A", price, ASOF, s), quantity, "A", s))
    assert cost([taken.get(lot.lot_no, 0) for lot in lots]) == best
