"""Estimation: daily returns, expected returns and covariance matrices estimated from a pricing
pack for a policy, and ``riskfolio_adapter``, the one module allowed to import riskfolio-lib
(lazily: its import costs seconds). May import ``services.data``.
"""
