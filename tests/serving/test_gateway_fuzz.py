"""Fuzzing the REST API from its OpenAPI description (schemathesis strategies, run by hypothesis).

schemathesis' own pytest plugin does not load under this pytest, so the test drives its
per-operation strategies directly: every operation the description lists gets generated
requests, and none may get a 5xx; every 4xx carries a v2 ``{"error": ...}``.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import GatewayStack, windows


def test_no_request_the_api_describes_gets_a_5xx(canary: GatewayStack) -> None:
    schema = schemathesis.openapi.from_url(f"{canary.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    exercised = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            if "model" in (case.path_parameters or {}):
                # The deployed model: bodies then reach decoding, validation and the backends.
                case.path_parameters = {**case.path_parameters, "model": MODEL}
            response = case.call(base_url=canary.url, timeout=30)
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                assert "error" in response.json(), f"{where}: {response.text}"

        fuzz()
        exercised.append(operation.label)
    assert "POST /v2/models/{model}/infer" in exercised
    assert canary.infer(windows()).status_code == 200, "still serving"
