"""Numbers and documents from the wire are bounded before they reach anything that could fail on
them: ``?after=`` ids, deeply nested JSON (apply, alarms, OFREP) and YAML (apply), numbers of
thousands of digits, non-finite numbers. Each is a 4xx that says what is wrong, never a 500, and
nothing is written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coalmine.core.wire import MAX_DEPTH
from tests.web.conftest import Web, bearer

MAX_ID = 2**63 - 1


def test_after_is_a_64_bit_id_on_every_paged_read(web: Web) -> None:
    rid = web.start_release()
    viewer = web.as_("viewer")
    for path in ("/v1/events", f"/v1/releases/{rid}/events", f"/v1/releases/{rid}/analysis"):
        for after in (2**31, MAX_ID):  # beyond PostgreSQL's INTEGER ids, within 64 bits
            r = web.client.get(path, params={"after": after}, headers=viewer)
            assert r.status_code == 200, (path, after, r.text)
            assert r.json() == []
        for after in (str(MAX_ID + 1), str(2**64), "9" * 5000):
            r = web.client.get(path, params={"after": after}, headers=viewer)
            assert r.status_code == 422, (path, after, r.text)
            assert r.json()["detail"].startswith("query.after: "), r.json()["detail"]
        r = web.client.get(path, params={"after": 0}, headers=viewer)
        assert r.status_code == 200


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def test_deeply_nested_apply_documents_are_a_400_before_they_are_parsed(sqlite_web: Web) -> None:
    web = sqlite_web
    before = web.fingerprint()
    deployer = web.as_("deployer")
    said = f"the document is nested more than {MAX_DEPTH} levels deep"
    for content_type, doc in (
        ("application/json", '{"app": "shop", "functions": ' + nested(100_000) + "}"),
        ("application/json", '{"app": "shop", "functions": ' + nested(MAX_DEPTH) + "}"),
        ("application/yaml", "app: shop\nfunctions: " + nested(100_000) + "\n"),
        (
            "application/yaml",
            "app: shop\nfunctions:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(600)),
        ),
        (
            "application/yaml",
            "app: shop\nx: &a [1]\n"
            + "".join(
                f"x{i}: &a{i} [*{'a' if i == 0 else f'a{i - 1}'}]\n" for i in range(MAX_DEPTH)
            ),
        ),
    ):
        r = web.client.post(
            "/v1/apply", content=doc, headers={**deployer, "Content-Type": content_type}
        )
        assert r.status_code == 400, (content_type, doc[:80], r.text)
        assert r.json()["detail"] == said
    assert web.fingerprint() == before
    # nested up to the limit is parsed (and then read as what it is)
    doc = '{"app": "shop", "functions": ' + nested(MAX_DEPTH - 1) + "}"
    r = web.client.post(
        "/v1/apply", content=doc, headers={**deployer, "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    ("content_type", "doc", "said"),
    [
        (
            "application/yaml",
            "app: shop\nfunctions: {api: {versions: {v1: x}}}\nrelease: {analysis: {interval: %s}}\n"
            % ("9" * 5000),
            "the number 99999999999999999999... (5000 digits) in the document is beyond 64 bits",
        ),
        (
            "application/json",
            '{"app": "shop", "release": {"analysis": {"interval": %s}}}' % ("9" * 5000),
            "the number 99999999999999999999... (5000 digits) in the document is beyond 64 bits",
        ),
        (
            "application/json",
            '{"app": "shop", "release": {"analysis": {"interval": %s}}}' % (10**30),
            f"the number {10**30} in the document is beyond 64 bits",
        ),
        (
            "application/json",
            '{"app": "shop", "release": {"analysis": {"interval": 1e400}}}',
            "the number 1e400 in the document is beyond the range of a float",
        ),
        (
            "application/json",
            '{"app": "shop", "release": {"analysis": {"interval": NaN}}}',
            "NaN is not a JSON number",
        ),
        (
            "application/yaml",
            "app: shop\nrelease: {analysis: {interval: .inf}}\n",
            "the number inf in the document is not finite",
        ),
        (
            "application/yaml",
            f"app: shop\nrelease: {{analysis: {{interval: {10**30}}}}}\n",
            f"the number {10**30} in the document is beyond 64 bits",
        ),
    ],
    ids=[
        "yaml-5000-digits",
        "json-5000-digits",
        "json-10^30",
        "json-1e400",
        "json-nan",
        "yaml-inf",
        "yaml-10^30",
    ],
)
def test_numbers_beyond_bounds_in_an_apply_document_are_a_400(
    sqlite_web: Web, content_type: str, doc: str, said: str
) -> None:
    web = sqlite_web
    before = web.fingerprint()
    r = web.client.post(
        "/v1/apply", content=doc, headers={**web.as_("deployer"), "Content-Type": content_type}
    )
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == said
    assert web.fingerprint() == before


@pytest.mark.parametrize(
    "analysis",
    [
        {"interval": 10**4000},
        {"interval": 10**400},
        {"min_requests": 10**400},
        {"metrics": {"error_rate": {"max_increase": 10**400}}},
    ],
)
def test_huge_numbers_in_a_release_request_are_a_400(sqlite_web: Web, analysis: Any) -> None:
    web = sqlite_web
    web.apply()
    before = web.fingerprint()
    r = web.client.post(
        "/v1/apps/shop/releases",
        content=json.dumps({"candidate": {"api": "v2"}, "analysis": analysis}),
        headers={**web.as_("deployer"), "Content-Type": "application/json"},
    )
    assert r.status_code in (400, 422), r.text
    assert "internal error" not in r.text
    assert web.fingerprint() == before


def test_deeply_nested_alarm_bodies_are_a_400(sqlite_web: Web) -> None:
    web = sqlite_web
    web.apply()
    before = web.fingerprint()
    said = f"the body is nested more than {MAX_DEPTH} levels deep"
    sns_said = f"the SNS Message is nested more than {MAX_DEPTH} levels deep"
    sns = {"Type": "Notification", "Message": '{"AlarmName": ' + nested(100_000) + "}"}
    for content_type, body, message in (
        ("application/json", '{"app": "shop", "name": ' + nested(100_000) + "}", said),
        ("text/plain", nested(100_000), said),
        ("text/plain", json.dumps(sns), sns_said),
    ):
        r = web.client.post(
            "/v1/alarms",
            content=body,
            headers={**web.as_("deployer"), "Content-Type": content_type},
        )
        assert r.status_code == 400, r.text
        assert r.json()["detail"] == message
    assert web.fingerprint() == before


def test_deeply_nested_ofrep_requests_are_a_parse_error(sqlite_web: Web) -> None:
    web = sqlite_web
    web.apply()
    key = bearer(web.sdk_key("shop"))
    body = '{"context": {"targetingKey": "u1", "deep": ' + nested(100_000) + "}}"
    said = f"the body is nested more than {MAX_DEPTH} levels deep"
    r = web.client.post("/ofrep/v1/evaluate/flags/shop", content=body, headers=key)
    assert r.status_code == 400, r.text
    assert r.json() == {"key": "shop", "errorCode": "PARSE_ERROR", "errorDetails": said}
    r = web.client.post("/ofrep/v1/evaluate/flags", content=body, headers=key)
    assert r.status_code == 400, r.text
    assert r.json() == {"errorCode": "PARSE_ERROR", "errorDetails": said}
