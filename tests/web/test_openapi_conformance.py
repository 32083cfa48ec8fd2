"""The published OpenAPI document against behaviour: schemathesis over every operation.

Every operation is called with an admin token on a seeded store (an app with a
running release, so paths that name it reach real work), with inputs the
schema allows (positive) and inputs it forbids (negative). The checks are
schemathesis' defaults: no 5xx, every status code, header and body documented,
schema-valid values accepted and invalid ones refused. Examples are
derandomized, yet what is generated still varies from one process to the next
(hash randomization reorders sets): run it under several PYTHONHASHSEED
values after a change. COALMINE_SCHEMATHESIS_EXAMPLES raises their number for
a longer hunt.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.web.conftest import ADMIN_SECRET, Web, bearer, running

DOCUMENTS = {
    # Bodies that are documents with rules JSON Schema cannot state (a strategy's
    # grammar, `versions: published` needing `lambda_function`, functions named in the
    # candidate existing): a schema-valid one may be refused, with a 400/422 saying
    # why. Every other check still runs on them.
    "POST /v1/apply",
    "POST /v1/apps",  # its release settings are the same document as apply's
    # a simple alarm or an SNS notification, any content type, the app from ?app=, the
    # body or the alarm's name: which of those holds is not something a schema can say
    "POST /v1/alarms",
    "POST /v1/apps/{app}/releases",
    # a batch is taken only for functions and versions registered in the app and for
    # windows near the control plane's clock: the registry and the clock, not a schema
    "POST /v1/metrics",
}
EXAMPLES = int(os.environ.get("COALMINE_SCHEMATHESIS_EXAMPLES", "25"))
AUTH = bearer(ADMIN_SECRET)


@pytest.fixture
def seeded(sqlite_url: str, admin_env: str) -> Iterator[Web]:
    with running(sqlite_url) as web:
        web.apply()
        r = web.client.post(
            "/v1/apps/shop/releases", json={"candidate": {"api": "v2"}}, headers=AUTH
        )
        assert r.status_code == 201, r.text
        yield web


def _run(operation: Any, mode: GenerationMode, excluded: list[Any]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Case) -> None:
        case.call_and_validate(headers=AUTH, excluded_checks=excluded)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_keeps_its_published_contract(seeded: Web, mode: GenerationMode) -> None:
    # read through the running app: schemathesis' own loader would run its lifespan again
    document = seeded.client.get("/openapi.json", headers=AUTH).json()
    schema = schemathesis.openapi.from_dict(document)
    schema.app = seeded.app
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        excluded = [positive_data_acceptance] if operation.label in DOCUMENTS else []
        definition = operation.definition.raw
        if mode is GenerationMode.NEGATIVE and not (
            definition.get("parameters") or definition.get("requestBody")
        ):
            continue  # nothing to get wrong (GET /healthz, GET /v1/apps)

        try:
            _run(operation, mode, excluded)
        except (Exception, BaseExceptionGroup) as exc:  # every operation's, not only the first
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 30  # the document was read whole
    assert not failures, "\n\n".join(failures)
