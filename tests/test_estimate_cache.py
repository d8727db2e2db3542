"""The estimate cache a batch shares: the same proposals with it as without, a key that covers
everything estimation reads, and ``estimation_symbols`` predicting what a proposal estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from capabilities.base import Services
from capabilities.catalog import optimizer_capabilities
from capabilities.propose_trades import ProposalInputs, resolve
from capabilities.runner import canonical_json, validate_input
from services.allocation.rebalance import estimation_symbols, propose_trades
from services.data.models import PricingPack
from services.data.policy import Policy
from services.data.seeds import load_benchmarks, load_constraint_defaults
from services.data.store import Store
from services.estimation.cache import EstimateCache, estimation_key
from services.estimation.estimators import Estimates, estimate_for_policy, estimation_settings

PACK = "PP_2022-12-28"
REQUESTS = [
    {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "quality_focused"},
    {"portfolio_id": "demo_concentrated", "pricing_pack_id": PACK, "policy_id": "aggressive_growth",
     "policy": {"universe": "pack", "max_tracking_error_pct": None, "max_turnover_pct": None}},
    {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "aggressive_growth",
     "policy": {"covariance_estimator": "ewma", "expected_return_estimator": "capm"}},
    {"portfolio": {"positions": [{"symbol": "AAPL", "shares": 100}, {"symbol": "XOM", "shares": 50}],
                   "cash": 1000}, "pricing_pack_id": PACK, "policy": {"benchmark": "DEMO_20"}},
]


def inputs_of(store: Store, request: dict[str, Any]) -> ProposalInputs:
    capability = next(c for c in optimizer_capabilities() if c.name == "optimizer.propose_trades")
    services = Services(store=store, constraint_defaults=load_constraint_defaults(), benchmarks=load_benchmarks())
    return resolve(validate_input(capability, request), services)


class RecordingCache(EstimateCache):
    """Remembers the symbols each proposal asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, ...]] = []

    def estimates_for(self, pack: PricingPack, symbols: Sequence[str], policy: Policy) -> Estimates:
        self.asked.append(tuple(symbols))
        return super().estimates_for(pack, symbols, policy)


@pytest.mark.parametrize("request_", REQUESTS, ids=range(len(REQUESTS)))
def test_a_shared_estimate_gives_the_same_proposal(module_store: Store, request_: dict[str, Any]) -> None:
    i = inputs_of(module_store, request_)
    alone = propose_trades(i.pack, i.holdings, i.policy, i.ratings, i.benchmarks)
    cache = RecordingCache()
    first = propose_trades(i.pack, i.holdings, i.policy, i.ratings, i.benchmarks, estimates=cache)
    again = propose_trades(i.pack, i.holdings, i.policy, i.ratings, i.benchmarks, estimates=cache)
    assert canonical_json(first.model_dump(mode="json")) == canonical_json(alone.model_dump(mode="json"))
    assert again == first
    # The batch engine's prediction of the estimation is the one the proposal made first; a
    # benchmark with names outside it asks for one more (the union its projection is fitted on).
    predicted = tuple(estimation_symbols(i.pack, i.holdings, i.policy, i.ratings, i.benchmarks) or ())
    per_proposal = len(cache.asked) // 2
    assert cache.asked[0] == predicted and cache.asked[:per_proposal] == cache.asked[per_proposal:]
    if per_proposal == 2:
        assert first.benchmark is not None and cache.asked[1][: len(predicted)] == predicted
        assert len(cache.asked[1]) > len(predicted)
    else:
        assert per_proposal == 1
    assert (cache.misses, cache.hits, len(cache)) == (per_proposal, per_proposal, per_proposal)


def test_an_empty_portfolio_estimates_nothing(module_store: Store) -> None:
    i = inputs_of(module_store, {"portfolio": {"positions": [], "cash": 0}, "pricing_pack_id": PACK})
    assert estimation_symbols(i.pack, i.holdings, i.policy, i.ratings, i.benchmarks) is None


def test_the_key_separates_what_estimation_depends_on(module_store: Store) -> None:
    i = inputs_of(module_store, REQUESTS[0])
    symbols = ["AAPL", "MSFT"]
    key = estimation_key(i.pack, symbols, i.policy)
    assert key[0] == i.pack.content_hash
    assert estimation_key(i.pack, symbols[::-1], i.policy) != key  # estimates are laid out in order
    for change in ({"lookback_days": 250}, {"covariance_estimator": "hist"}, {"ewma_decay": 0.9},
                   {"expected_return_estimator": "capm"}, {"risk_free_rate": 0.03}):
        assert estimation_key(i.pack, symbols, i.policy.model_copy(update=change)) != key, change
    # Fields estimation does not read do not split the cache.
    assert estimation_key(i.pack, symbols, i.policy.model_copy(update={"max_turnover_pct": 5.0})) == key


def test_estimation_reads_no_policy_field_the_key_leaves_out(module_store: Store) -> None:
    """Whatever ``estimate_for_policy`` reads from a policy must be in ``estimation_settings``."""
    policy = inputs_of(module_store, REQUESTS[0]).policy

    class Spy:
        def __init__(self) -> None:
            self.read: set[str] = set()

        def __getattr__(self, name: str) -> Any:
            self.read.add(name)
            return getattr(policy, name)

    spy = Spy()
    estimate_for_policy(module_store.get_pack(PACK), ["AAPL", "MSFT"], spy)  # type: ignore[arg-type]
    assert spy.read == set(estimation_settings(policy))


def test_shared_estimates_cannot_be_changed_in_place(module_store: Store) -> None:
    i = inputs_of(module_store, REQUESTS[0])
    cache = EstimateCache()
    est = cache.estimates_for(i.pack, ["AAPL", "MSFT"], i.policy)
    assert est is cache.estimates_for(i.pack, ["AAPL", "MSFT"], i.policy)
    with pytest.raises(ValueError, match="read-only"):
        est.cov[0, 0] = 0.0
    fresh = estimate_for_policy(i.pack, ["AAPL", "MSFT"], i.policy)
    np.testing.assert_array_equal(est.cov, fresh.cov)
    np.testing.assert_array_equal(est.mu, fresh.mu)
