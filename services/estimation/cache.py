"""Estimates shared between proposals: one estimation per pack, symbols and estimation settings.

Many proposals on one pack often estimate the same thing (the same model portfolio held in many
accounts, or ``universe: pack``). An ``EstimateCache`` hands them one ``Estimates``, computed by
``estimate_for_policy`` exactly as a single proposal would, so a cached and an uncached proposal
are byte-identical. The key is the pack's *content* hash (not its id), the symbols in order (the
estimates are laid out in that order) and ``estimation_settings(policy)``.

A cache holds what it is given and what it computes, without bound: scope one to a batch, not
to a server's lifetime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.data.models import PricingPack
from services.data.policy import Policy
from services.estimation.estimators import Estimates, estimate_for_policy, estimation_settings

EstimationKey = tuple[str, tuple[str, ...], tuple[tuple[str, Any], ...]]


def estimation_key(pack: PricingPack, symbols: Sequence[str], policy: Policy) -> EstimationKey:
    """What an estimation depends on: the pack's content hash, the symbols in order, the settings."""
    return pack.content_hash, tuple(symbols), tuple(sorted(estimation_settings(policy).items()))


class EstimateCache:
    """Estimates by ``estimation_key``; a miss is estimated with ``estimate_for_policy`` and kept.

    Shared estimates are frozen (their arrays read-only), so a caller that tried to modify one
    in place would fail loudly instead of changing another proposal's inputs.
    """

    def __init__(self, entries: Mapping[EstimationKey, Estimates] | None = None):
        self._entries: dict[EstimationKey, Estimates] = {}
        for key, estimates in (entries or {}).items():
            self.put(key, estimates)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: EstimationKey, estimates: Estimates) -> None:
        """Keep ``estimates`` under ``key`` (computed elsewhere, e.g. by a batch worker)."""
        for array in (estimates.mu, estimates.cov):
            array.flags.writeable = False
        self._entries[key] = estimates

    def estimates_for(self, pack: PricingPack, symbols: Sequence[str], policy: Policy) -> Estimates:
        """The estimates ``estimate_for_policy(pack, symbols, policy)`` returns, computed at most once."""
        key = estimation_key(pack, symbols, policy)
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        estimates = estimate_for_policy(pack, list(symbols), policy)
        self.put(key, estimates)
        return estimates
