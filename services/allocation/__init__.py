"""Allocation: from a policy and estimates to a costed, whole-share trade proposal. The convex
problems in cvxpy (``optimization``), the rounding to whole shares that keeps every hard limit
(``rounding``), trading costs (``costs``), the proposal's output models (``proposal``) and the
builder that ties them together (``rebalance.propose_trades``). May import ``data``,
``estimation`` and ``tax``.
"""
