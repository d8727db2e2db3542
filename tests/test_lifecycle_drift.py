"""Drift and schedules, with hand-computed cases: bands (exactly 5.00 points is on the band),
relative bands, month ends, a quarter boundary and holidays on the demo pack's calendar."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from services.data.models import PricingPack, Security
from services.errors import InputError
from services.lifecycle.calendar import check_trading_date, schedule_due, scheduled_date
from services.lifecycle.drift import check_drift

PACK = "PP_2022-12-28"


def _tiny_pack() -> PricingPack:
    # Three trading days; Wednesday 2024-01-03 is missing (a "holiday" of this pack).
    dates = pd.DatetimeIndex(["2024-01-01", "2024-01-02", "2024-01-04"])
    closes = pd.DataFrame({"A": [90.0, 95.0, 100.0], "B": [50.0, 50.0, 50.0], "C": [np.nan, 20.0, np.nan]},
                          index=dates)
    secs = tuple(Security(s, s, "Tech", "equity") for s in ("A", "B", "C"))
    return PricingPack(id="TINY", securities=secs, closes=closes)


def _target(weights: dict[str, float]) -> dict[str, object]:
    return {"version": 1, "policy_id": None, "weights_pct": weights}


def _drift(target: dict[str, float], **kw):
    # A 60 × $100 = $6,000 (60%), B 60 × $50 = $3,000 (30%), cash $1,000 (10%): $10,000.
    return check_drift(_tiny_pack(), portfolio_id="p", positions={"A": 60, "B": 60}, cash=Decimal("1000"),
                       target=_target(target), **kw)


def test_drift_by_hand_and_exactly_five_points_is_on_the_band() -> None:
    report = _drift({"A": 55.0, "B": 35.0})  # cash target 10%
    rows = {r.symbol: r for r in report.drifts}
    assert float(report.portfolio_value) == 10000.0
    assert (rows["A"].current_weight_pct, rows["A"].drift_pct) == (60.0, 5.0)
    assert (rows["B"].current_weight_pct, rows["B"].drift_pct) == (30.0, -5.0)
    assert rows["A"].relative_drift_pct == pytest.approx(5 / 55 * 100, abs=1e-4)
    assert rows["B"].relative_drift_pct == pytest.approx(-5 / 35 * 100, abs=1e-4)
    assert (rows["CASH"].current_weight_pct, rows["CASH"].target_weight_pct, rows["CASH"].drift_pct) == (10.0, 10.0, 0.0)
    assert not any(r.breached for r in report.drifts)
    assert report.rebalance_due is False and report.reasons == []
    assert report.explanation.startswith("no rebalance due: every line is within 5 points")


def test_just_over_the_band_is_due_and_names_the_largest_line() -> None:
    report = _drift({"A": 54.99, "B": 35.0})  # A drifts +5.01, cash target 10.01 → cash −0.01
    rows = {r.symbol: r for r in report.drifts}
    assert rows["A"].drift_pct == 5.01 and rows["A"].breached
    assert not rows["B"].breached
    assert report.rebalance_due and report.largest_drift.symbol == "A"
    assert report.reasons == ["threshold: 1 line(s) outside the band, largest A at 60.00% vs target 54.99% "
                              "(+5.01 points; band 5 points)"]


def test_relative_band() -> None:
    # B: 30% held vs 35% target is −14.29% relative: outside a 10% relative band, inside 15%;
    # A: +5 on 55 is +9.09%, inside both.
    assert _drift({"A": 55.0, "B": 35.0}, relative_band_pct=10).rebalance_due
    assert {r.symbol for r in _drift({"A": 55.0, "B": 35.0}, relative_band_pct=10).drifts if r.breached} == {"B"}
    assert not _drift({"A": 55.0, "B": 35.0}, relative_band_pct=15).rebalance_due


def test_a_name_in_the_target_but_not_held_and_a_cash_flow() -> None:
    report = _drift({"A": 50.0, "B": 30.0, "C": 10.0}, cash_flow=Decimal("-2500"))
    c = next(r for r in report.drifts if r.symbol == "C")
    # C has no close on the asof 2024-01-04; its last close (20.0 on 01-02) is carried forward.
    assert (c.shares, c.price, c.current_weight_pct, c.drift_pct, c.relative_drift_pct) == (0, 20.0, 0.0, -10.0, -100.0)
    assert report.reasons[-1] == "cash flow: withdrawal of $2,500.00 to raise"
    assert float(report.cash_flow) == -2500.0


def test_asof_prices_and_non_trading_asof() -> None:
    report = _drift({"A": 60.0, "B": 30.0}, asof=date(2024, 1, 2))
    a = next(r for r in report.drifts if r.symbol == "A")
    # On 2024-01-02 A closed at 95: 5,700 of 9,700.
    assert a.price == 95.0 and a.current_weight_pct == round(5700 / 9700 * 100, 4)
    with pytest.raises(InputError) as err:
        _drift({"A": 60.0}, asof=date(2024, 1, 3))
    assert err.value.details["nearest"] == ["2024-01-02", "2024-01-04"]
    assert "not a trading date of pricing pack TINY" in err.value.message


@pytest.fixture(scope="module")
def demo_pack(module_store):
    return module_store.get_pack(PACK)


@pytest.mark.parametrize(
    ("schedule", "asof", "last", "due", "when"),
    [
        # Month end on the pack's calendar: booked on the last trading day of November,
        # due on the first trading day of December; not again within December.
        ("monthly", "2022-12-01", "2022-11-30", True, "2022-12-01"),
        ("monthly", "2022-12-28", "2022-12-01", False, "2022-12-01"),
        ("monthly", "2022-12-28", "2022-11-30", True, "2022-12-01"),  # missed: still due
        # Quarter boundary: Q4 2022 starts on Monday 2022-10-03 (October 1-2 is a weekend).
        ("quarterly", "2022-10-03", "2022-09-30", True, "2022-10-03"),
        ("quarterly", "2022-09-30", "2022-07-01", False, "2022-07-01"),
        ("quarterly", "2022-12-28", "2022-10-03", False, "2022-10-03"),
        # Holidays: Independence Day (Monday 2022-07-04) moves the week's date to Tuesday;
        # Christmas observed (Monday 2022-12-26) to Tuesday 2022-12-27.
        ("weekly", "2022-07-05", "2022-07-01", True, "2022-07-05"),
        ("weekly", "2022-07-08", "2022-07-05", False, "2022-07-05"),
        ("weekly", "2022-12-27", "2022-12-23", True, "2022-12-27"),
        # Good Friday 2022-04-15 is not a trading day; daily is due on the next one.
        ("daily", "2022-04-18", "2022-04-14", True, "2022-04-18"),
        ("daily", "2022-04-18", "2022-04-18", False, "2022-04-18"),
        # Never booked: due.
        ("monthly", "2022-12-28", None, True, "2022-12-01"),
    ],
)
def test_schedules_on_the_demo_calendar(demo_pack, schedule, asof, last, due, when) -> None:
    last_day = None if last is None else date.fromisoformat(last)
    got_due, got_when, why = schedule_due(demo_pack, date.fromisoformat(asof), schedule, last_day)
    assert (got_due, got_when.isoformat()) == (due, when), why


def test_scheduled_date_of_a_month_starting_on_a_holiday(demo_pack) -> None:
    # 2022-01-01 is a Saturday, 2022-01-03 the first trading day of 2022 (and of Q1).
    assert scheduled_date(demo_pack, date(2022, 1, 20), "monthly") == date(2022, 1, 3)
    assert scheduled_date(demo_pack, date(2022, 3, 31), "quarterly") == date(2022, 1, 3)


def test_holiday_asof_is_refused_with_nearest_dates(demo_pack) -> None:
    with pytest.raises(InputError) as err:
        check_trading_date(demo_pack, date(2022, 7, 4))
    assert err.value.details["nearest"] == ["2022-07-01", "2022-07-05"]
