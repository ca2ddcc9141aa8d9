"""Property-based testing of the running service from its own OpenAPI document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import API_KEY, Service

pytestmark = pytest.mark.integration
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(service: Service, mode: GenerationMode) -> None:
    """Generated valid and invalid requests to every operation of the live service: never
    a 5xx, every status, content type and body as documented, schema-invalid bodies
    refused."""
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {o.path for o in operations} >= {"/v1/decisions", "/v1/decisions/{txn_id}"}
    calls: dict[str, int] = {}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not operation.path.startswith("/v1/"):
            continue  # nothing to make invalid in a request without parameters

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            r = case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            assert r.status_code < 500

        check()
    assert calls["POST /v1/decisions"] >= 10 and calls["GET /v1/decisions/{txn_id}"] >= 10
