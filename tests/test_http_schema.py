"""Property-based requests from the server's own OpenAPI document (schemathesis), against a real
``optimizer serve``: no 500s, and every response matches the schema it declares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from serving import Server, add_user, seeded_environment

# Bounded so the suite stays quick; the slow endpoints (optimizations, runs) get fewer.
EXAMPLES = {"default": 12, "slow": 4}
SLOW = ("/api/v1/optimize", "/api/v1/optimize/batch", "/v1/runs", "/v1/execute")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    with ExitStack() as stack:
        env, _ = stack.enter_context(seeded_environment(tmp_path_factory.mktemp("schema"), request.param))
        key = add_user("demo", env)
        server = Server(env)
        stack.callback(server.stop)
        yield server, key


def test_generated_requests_get_no_500_and_match_the_schema(served: tuple[Server, str]) -> None:
    server, key = served
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    checked: list[str] = []
    statuses: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        slow = operation.path in SLOW
        examples = EXAMPLES["slow" if slow else "default"]

        @settings(max_examples=examples, deadline=None, phases=[Phase.generate, Phase.explicit],
                  suppress_health_check=list(HealthCheck), database=None, derandomize=True)
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=server.url, headers=headers, timeout=300)
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            statuses.append(response.status_code)

        check()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /api/v1/optimize" in checked and "POST /v1/runs/{run_id}/approve" in checked
    assert 200 in statuses and 422 in statuses  # requests got through, and were refused where bad
