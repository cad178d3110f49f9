"""Fuzz every documented operation from the OpenAPI schema (schemathesis over real HTTP): no input may
produce a 5xx. A bounded number of examples per operation keeps it a CI test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from serving.config import ServingSettings


@pytest.fixture(scope="module")
def api(app_factory: Callable[..., FastAPI], live_server: Callable) -> Iterator[Any]:
    # The events consumer stays off: fuzzed clicks would only be dead-lettered, at the cost of CPU. So
    # readiness must not wait for one (/readyz would rightly answer 503 without a live consumer).
    app = app_factory(serving=ServingSettings(consume_events=False, require_consumer=False))
    with live_server(app) as live:
        yield schemathesis.openapi.from_url(f"{live.url}/openapi.json")


def test_no_input_gives_a_server_error(api: Any) -> None:
    # Strategies driven by hypothesis directly: schemathesis' pytest plugin (from_fixture) does not run on
    # pytest 9. Each operation gets its own bounded run.
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /search", "GET /search", "POST /events"}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call(timeout=30)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
            assert "Traceback" not in response.text

        check()
