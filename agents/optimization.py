"""The optimization service contract (``/api/v1/optimize``) mapped onto ``optimizer.propose_trades``.

A request names an objective and a method in the contract's vocabulary, constraints as
fractions (0.25 = 25%) and risk parameters; it becomes a ``propose_trades`` request whose
policy fields are the engine's (every ``*_pct`` a percentage). Objectives and methods the engine
does not have yet are refused by name, listing what it has. The result reports the whole-share
portfolio the proposal would leave, so every figure can be recomputed from the proposal;
``optimization_time_ms`` is the only wall-clock figure and lives only here.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, create_model

from capabilities.base import RequestContext
from services.data.policy import PolicyOverrides
from services.data.store import Store
from services.errors import InputError, NotFoundError, OptimizerError


class Optimizer(Protocol):
    """What this module needs of the agent (``OptimizerAgent`` provides it)."""

    store: Store

    def execute(self, name: str, request: Any, ctx: RequestContext | None = None) -> dict[str, Any]: ...

    def check_portfolio_access(self, portfolio_id: str, ctx: RequestContext | None = None) -> None: ...

# The history rows of this contract, beside the proposals' own rows.
CAPABILITY = "api.optimize"

Objective = Literal["MAX_SHARPE", "MIN_VOLATILITY", "MAX_RETURN", "RISK_PARITY", "MULTI_OBJECTIVE"]
Method = Literal[
    "MEAN_VARIANCE",
    "BLACK_LITTERMAN",
    "RISK_PARITY",
    "HIERARCHICAL_RISK_PARITY",
    "ROBUST_OPTIMIZATION",
]

# (method, objective) -> the engine's policy method and any policy fields it implies.
ENGINE: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("MEAN_VARIANCE", "MAX_SHARPE"): ("max_sharpe", {}),
    ("MEAN_VARIANCE", "MIN_VOLATILITY"): ("min_variance", {}),
    # Mean-variance with no risk penalty maximizes expected return within the constraints.
    ("MEAN_VARIANCE", "MAX_RETURN"): ("mean_variance", {"risk_aversion": 0.0}),
    ("RISK_PARITY", "RISK_PARITY"): ("risk_parity", {}),
    ("HIERARCHICAL_RISK_PARITY", "RISK_PARITY"): ("hrp", {}),
}
SUPPORTED_OBJECTIVES = sorted({objective for _, objective in ENGINE})
SUPPORTED_METHODS = sorted({method for method, _ in ENGINE})
DEFAULT_OBJECTIVE = {"MEAN_VARIANCE": "MAX_SHARPE"}

_RISK_FIELDS = (
    "risk_free_rate",
    "risk_aversion",
    "lookback_days",
    "covariance_estimator",
    "expected_return_estimator",
)

# The engine's own field declarations, so the contract never restates a bound or a description.
RiskParameters = create_model(  # type: ignore[call-overload]
    "RiskParameters",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
    __doc__="Estimation and risk settings; each is the policy field of the same name.",
    **{name: (PolicyOverrides.model_fields[name].annotation, PolicyOverrides.model_fields[name])
       for name in _RISK_FIELDS},
)


class Constraints(BaseModel):
    """Limits as fractions of portfolio value (0.25 = 25%)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_weight: float | None = Field(None, gt=0, le=1, description="Largest weight of any one security.")
    min_weight: float | None = Field(
        None, ge=0, le=1,
        description="Smallest weight of a security held; only 0 (long-only, a name may be sold "
        "entirely) is supported.",
    )
    sector_limits: dict[str, float] | None = Field(
        None, description="Largest weight per sector, e.g. {\"Technology\": 0.3}."
    )
    turnover_limit: float | None = Field(
        None, ge=0, le=2, description="Largest discretionary turnover, Σ|trade value| / value."
    )
    leverage_limit: float | None = Field(
        None, gt=0,
        description="Largest gross exposure / value. The engine is long-only and never borrows, "
        "so any limit of 1 or more holds; below 1 is not supported.",
    )


class OptimizeRequest(BaseModel):
    """One optimization of a stored portfolio."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    portfolio_id: str = Field(min_length=1, max_length=64, description="A stored portfolio you own.")
    pricing_pack_id: str | None = Field(
        None, min_length=1, max_length=64,
        description="Pricing pack to price and estimate from; default: the pack with the latest asof.",
    )
    policy_id: str | None = Field(
        None, min_length=1, max_length=64,
        description="Policy template the request's fields override (e.g. quality_focused).",
    )
    objective: Objective | None = Field(
        None,
        description=f"Supported: {', '.join(SUPPORTED_OBJECTIVES)} (default MAX_SHARPE for "
        "MEAN_VARIANCE, RISK_PARITY for the risk-parity methods).",
    )
    method: Method = Field("MEAN_VARIANCE", description=f"Supported: {', '.join(SUPPORTED_METHODS)}.")
    constraints: Constraints = Field(default_factory=Constraints)
    risk_parameters: RiskParameters = Field(default_factory=RiskParameters)  # type: ignore[valid-type]


class OptimizationMetadata(BaseModel):
    convergence_status: str = Field(
        description="'optimal', or 'fallback:<method>' when the engine used another method "
        "(the proposal's warnings say why)."
    )
    iterations: int | None = Field(
        description="Solver iterations; null: the engine does not report them."
    )
    optimization_time_ms: float = Field(description="Wall-clock time of this optimization.")
    objective_value: float | None = Field(
        description="The objective at the whole-share portfolio: Sharpe ratio (MAX_SHARPE), "
        "volatility (MIN_VOLATILITY), expected return (MAX_RETURN); null for RISK_PARITY."
    )
    constraints_satisfied: bool
    engine_method: str = Field(description="The engine's policy method that was asked for.")
    warnings: list[str]


class OptimizeResult(BaseModel):
    """The whole-share portfolio the proposal leaves, as fractions (0.1 = 10%)."""

    portfolio_id: str
    pricing_pack_id: str
    asof: str
    objective: str
    method: str
    optimal_weights: dict[str, float] = Field(
        description="Weight of each security held after trading (the rest is cash), by symbol."
    )
    expected_return: float = Field(description="Annualized expected return after trading.")
    expected_volatility: float = Field(description="Annualized volatility after trading.")
    sharpe_ratio: float | None
    inputs_hash: str = Field(description="The proposal's inputs hash (request and pack).")
    optimization_metadata: OptimizationMetadata


class BatchItem(BaseModel):
    """One item of a batch: its result, or the error that stopped it."""

    index: int
    result: OptimizeResult | None = None
    error: dict[str, Any] | None = None


def validate_request(payload: Any) -> OptimizeRequest:
    """Parse a request; a pydantic error becomes an InputError naming each field."""
    from pydantic import ValidationError

    try:
        return OptimizeRequest.model_validate(payload)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(map(str, e["loc"])) or "(request)", "message": e["msg"]}
            for e in exc.errors()
        ]
        raise InputError(
            "optimization request is invalid: "
            + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            details={"errors": errors},
        ) from exc


def engine_request(request: OptimizeRequest, default_pack: str) -> tuple[str, dict[str, Any]]:
    """The engine's policy method and the ``propose_trades`` request for ``request``.

    Raises:
        InputError: an objective, method or constraint the engine does not support, by name.
    """
    if request.method not in SUPPORTED_METHODS:
        raise InputError(
            f"method {request.method} is not supported yet; supported: {', '.join(SUPPORTED_METHODS)}",
            details={"field": "method", "value": request.method, "supported": SUPPORTED_METHODS},
        )
    objective = request.objective or DEFAULT_OBJECTIVE.get(request.method, "RISK_PARITY")
    if objective not in SUPPORTED_OBJECTIVES:
        raise InputError(
            f"objective {objective} is not supported yet; supported: {', '.join(SUPPORTED_OBJECTIVES)}",
            details={"field": "objective", "value": objective, "supported": SUPPORTED_OBJECTIVES},
        )
    if (request.method, objective) not in ENGINE:
        pairs = [f"{m}+{o}" for m, o in ENGINE]
        raise InputError(
            f"method {request.method} cannot pursue objective {objective}; supported pairs: "
            + ", ".join(pairs),
            details={"field": "objective", "value": objective, "supported": pairs},
        )
    engine_method, implied = ENGINE[(request.method, objective)]
    c = request.constraints
    if c.min_weight:
        raise InputError(
            f"constraints.min_weight {c.min_weight} is not supported; only 0 (long-only)",
            details={"field": "constraints.min_weight", "value": c.min_weight, "supported": [0]},
        )
    if c.leverage_limit is not None and c.leverage_limit < 1:
        raise InputError(
            f"constraints.leverage_limit {c.leverage_limit} is not supported: the engine is "
            "long-only and fully invested, so leverage is 1 or less; give 1 or more",
            details={"field": "constraints.leverage_limit", "value": c.leverage_limit},
        )
    risk = request.risk_parameters.model_dump(exclude_unset=True)
    if "risk_aversion" in risk and "risk_aversion" in implied:
        raise InputError(
            f"risk_parameters.risk_aversion does not apply to objective {objective}",
            details={"field": "risk_parameters.risk_aversion", "value": risk["risk_aversion"]},
        )
    policy: dict[str, Any] = {"method": engine_method, **implied, **risk}
    if c.max_weight is not None:
        policy["max_single_position_pct"] = _pct(c.max_weight)
    if c.sector_limits:
        bad = {k: v for k, v in c.sector_limits.items() if not 0 < v <= 1}
        if bad:
            raise InputError(
                "constraints.sector_limits must be fractions in (0, 1]; invalid: "
                + ", ".join(f"{k}={v}" for k, v in sorted(bad.items())),
                details={"field": "constraints.sector_limits", "invalid": bad},
            )
        policy["sector_limits_pct"] = {k: _pct(v) for k, v in sorted(c.sector_limits.items())}
    if c.turnover_limit is not None:
        policy["max_turnover_pct"] = _pct(c.turnover_limit)
    payload: dict[str, Any] = {
        "portfolio_id": request.portfolio_id,
        "pricing_pack_id": request.pricing_pack_id or default_pack,
        "policy": policy,
    }
    if request.policy_id is not None:
        payload["policy_id"] = request.policy_id
    return engine_method, payload


def optimize(agent: Optimizer, payload: Any, ctx: RequestContext) -> dict[str, Any]:
    """Run one optimization for ``ctx``'s user, record it, and return it JSON-ready."""
    started = time.perf_counter()
    request = validate_request(payload)
    engine_method, proposal_request = engine_request(request, agent.store.latest_pack_id())
    proposal = agent.execute("optimizer.propose_trades", proposal_request, ctx)
    objective = request.objective or DEFAULT_OBJECTIVE.get(request.method, "RISK_PARITY")
    after = proposal["after"]
    volatility = after["volatility_pct"] / 100
    expected = after["expected_return_pct"] / 100
    objective_value = {
        "MAX_SHARPE": after["sharpe"],
        "MIN_VOLATILITY": volatility,
        "MAX_RETURN": expected,
    }.get(objective)
    result = OptimizeResult(
        portfolio_id=request.portfolio_id,
        pricing_pack_id=proposal["pricing_pack_id"],
        asof=proposal["asof"],
        objective=objective,
        method=request.method,
        optimal_weights={
            t["symbol"]: round(t["target_weight_pct"] / 100, 6)
            for t in proposal["trades"]
            if t["target_shares"] > 0
        },
        expected_return=round(expected, 6),
        expected_volatility=round(volatility, 6),
        sharpe_ratio=after["sharpe"],
        inputs_hash=proposal["_metadata"]["inputs_hash"],
        optimization_metadata=OptimizationMetadata(
            convergence_status="optimal"
            if proposal["method"] == engine_method
            else f"fallback:{proposal['method']}",
            iterations=None,
            optimization_time_ms=round((time.perf_counter() - started) * 1000, 1),
            objective_value=None if objective_value is None else round(objective_value, 6),
            constraints_satisfied=proposal["constraints_met"],
            engine_method=engine_method,
            warnings=proposal["warnings"],
        ),
    ).model_dump(mode="json")
    agent.store.record_proposal(
        capability=CAPABILITY,
        portfolio_id=request.portfolio_id,
        pricing_pack_id=result["pricing_pack_id"],
        policy_id=request.policy_id,
        inputs_hash=result["inputs_hash"],
        result_json=json.dumps(result, sort_keys=True),
    )
    return result


def optimize_item(agent: Optimizer, index: int, payload: Any, ctx: RequestContext) -> dict[str, Any]:
    """One batch item: its result, or its error (an internal error says only that it happened)."""
    try:
        return BatchItem(index=index, result=optimize(agent, payload, ctx)).model_dump(mode="json")
    except OptimizerError as err:
        return BatchItem(index=index, error=err.to_dict()).model_dump(mode="json")


def latest(agent: Optimizer, portfolio_id: str, ctx: RequestContext) -> dict[str, Any]:
    """The last recorded optimization of a portfolio ``ctx``'s user may see.

    Raises:
        NotFoundError: none recorded, or the portfolio is not the caller's (the same error).
    """
    agent.check_portfolio_access(portfolio_id, ctx)
    stored = agent.store.latest_result(CAPABILITY, portfolio_id)
    if stored is None:
        raise NotFoundError(
            f"no optimization of portfolio '{portfolio_id}' recorded; POST /api/v1/optimize first",
            details={"field": "portfolio_id", "value": portfolio_id},
        )
    return json.loads(stored)


def _pct(fraction: float) -> float:
    # 0.1 * 100 is 10.000000000000002 in binary floating point; the policy wants 10.
    return round(fraction * 100, 10)
