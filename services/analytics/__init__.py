"""Analytics: the risk figures of a portfolio (concentration, volatility, Sharpe, drawdown,
VaR/CVaR, beta, tracking error, risk contributions) in ``risk``, and the before/after impact of
a list of trades in ``impact``. May import ``data``, ``estimation``, ``tax`` and ``allocation``.
"""
