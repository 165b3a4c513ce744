"""Schemathesis against the app's own OpenAPI document, over a real server: no 5xx, no response that
violates the documented schema, only documented status codes and content types.
Bounded: a few examples per operation (the whole module stays well under a minute).
``negative_data_rejection`` is among the checks: a request that violates the documented schema must
be refused, so the documented request schemas say exactly what the server accepts (``slot_state: null``
and ``event_payload: null`` are documented, and mean ``{}``)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = (not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
          negative_data_rejection)


@pytest.fixture(scope="module")
def api_schema(default_server: str) -> Any:
    return schemathesis.openapi.from_url(default_server + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any) -> None:
    case.call_and_validate(checks=CHECKS, timeout=10)
