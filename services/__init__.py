"""The deterministic core, in rooms by concern; it knows nothing of LLMs, LangGraph, HTTP or MCP.

Rooms, lowest first; a room imports only from the rooms before it (``errors`` is shared by all):

- ``data``        — domain models, policies, the store, importers, seed loading;
- ``estimation``  — returns, expected returns, covariance; the riskfolio adapter;
- ``tax``         — tax lots, lot selection, tax cost, wash sales;
- ``allocation``  — the convex problems, whole-share rounding, costs, the proposal builder;
- ``analytics``   — risk figures (volatility, VaR, beta, tracking error), the impact of trades;
- ``hedging``     — stress scenarios, factor exposures, hedge sizing, regime playbooks;
- ``lifecycle``   — targets, drift, schedules, booking approved trades, history;
- ``batch``       — many requests on one pack, on a Dask cluster.

``tests/test_architecture.py`` enforces the order and that no two modules import each other.
"""

ROOMS = ("data", "estimation", "tax", "allocation", "analytics", "hedging", "lifecycle", "batch")
