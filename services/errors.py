"""Typed errors that tell the caller what happened, where, and how to fix it.

Every error carries a stable ``code``. Input errors are ones the caller can fix by changing the
request or the file (CLI exit code 2); domain errors are about the state of the world or the
policy (unknown pack, infeasible constraints, solver trouble; exit code 3).
"""

from __future__ import annotations

from typing import Any


class OptimizerError(Exception):
    """Base class: a message for people, a stable code for programs, details for both."""

    code = "internal_error"
    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InputError(OptimizerError):
    """The request or file is invalid; the message names the field, the value and the rule."""

    code = "invalid_input"
    exit_code = 2


class DomainError(OptimizerError):
    """The request is well-formed but cannot be served as asked."""

    code = "domain_error"
    exit_code = 3


class NotFoundError(DomainError):
    """A pack, portfolio, policy or other named object does not exist (or is not yours)."""

    code = "not_found"


class ConflictError(DomainError):
    """A write would change something that is frozen (e.g. re-importing a pack differently)."""

    code = "conflict"


class InfeasibleError(DomainError):
    """The policy's constraints cannot all hold at once; details name the conflicting ones."""

    code = "infeasible"


class SolverError(DomainError):
    """The solver failed after any recorded fallback; details name the solver and status."""

    code = "solver_failed"


class AuthenticationError(OptimizerError):
    """No API key, or one that is unknown or revoked (HTTP 401)."""

    code = "unauthenticated"
    exit_code = 3
