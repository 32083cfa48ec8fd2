"""Versions registered from AWS: ``versions: published`` in ``POST /v1/apply`` and a
``latest-published`` release candidate, over moto's Lambda (ListVersionsByFunction
answering in pages of 50, as AWS does), through the API and through the CLI."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
import pytest

from coalmine.cli import main
from tests.aws import ACCOUNT, REGION, aws_environment
from tests.web.conftest import Web, serve

moto = pytest.importorskip("moto")
from tests.aws.moto_lambda import aws_version_listing, create_function, publish  # noqa: E402

ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:place-order"
DOC = """\
app: orders
functions:
  place-order:
    versions: published
    lambda_function: {function}
    current: "{current}"
  notify-user:
    versions:
      v1: orders.notify:handler
    current: v1
release:
  strategy: AllAtOnce
"""


def doc(function: str = ARN, current: str = "1") -> str:
    return DOC.format(function=function, current=current)


@pytest.fixture
def pages() -> Iterator[list[dict[str, str]]]:
    """moto's AWS for the test; the ListVersionsByFunction pages asked for."""
    with (
        aws_environment(),
        moto.mock_aws(config={"lambda": {"use_docker": False}}),
        aws_version_listing() as asked,
    ):
        yield asked


def post(web: Web, body: str, **params: str) -> httpx.Response:
    r: httpx.Response = web.client.post(
        "/v1/apply",
        content=body,
        params=params,
        headers={**web.as_("deployer"), "Content-Type": "application/yaml"},
    )
    return r


def versions_of(web: Web, function: str, app: str = "orders") -> dict[str, str]:
    got = web.client.get(f"/v1/apps/{app}", headers=web.as_("viewer")).json()
    [fn] = [f for f in got["functions"] if f["name"] == function]
    return {v["name"]: v["target"] for v in fn["versions"]}


def start(web: Web, candidate: dict[str, str], app: str = "orders") -> httpx.Response:
    r: httpx.Response = web.client.post(
        f"/v1/apps/{app}/releases", json={"candidate": candidate}, headers=web.as_("deployer")
    )
    return r


# -- apply ---------------------------------------------------------------------------


def test_apply_registers_every_published_version_across_pages(
    web: Web, pages: list[dict[str, str]]
) -> None:
    create_function("place-order")
    publish("place-order", 57)
    empty = web.fingerprint()

    preview = web.apply(doc(), dry_run="true")
    registered = [f"register place-order {n} -> {ARN}:{n}" for n in range(1, 58)]
    assert preview["dry_run"] is True
    assert preview["changes"] == [
        "create app orders",
        "create function notify-user",
        "register notify-user v1 -> orders.notify:handler",
        "set notify-user current version v1",
        "create function place-order",
        *registered,
        "set place-order current version 1",
    ]
    assert web.fingerprint() == empty, "a dry run registers nothing"
    assert {"Marker": "50"} in pages, "the second page (versions 51-57) was asked for"

    done = web.apply(doc())
    assert done["changes"] == preview["changes"]
    assert versions_of(web, "place-order") == {str(n): f"{ARN}:{n}" for n in range(1, 58)}
    app = web.client.get("/v1/apps/orders", headers=web.as_("viewer")).json()
    assert {f["name"]: f["current_version"] for f in app["functions"]} == {
        "notify-user": "v1",
        "place-order": "1",
    }

    applied = web.fingerprint()
    assert web.apply(doc()) == {
        "app": "orders",
        "changed": False,
        "changes": [],
        "dry_run": False,
        "release": None,
        "notes": [],
    }
    assert web.fingerprint() == applied, "applying twice changes nothing"

    publish("place-order")
    assert web.apply(doc())["changes"] == [f"register place-order 58 -> {ARN}:58"]


def test_the_function_by_name_and_current_among_the_published(
    sqlite_web: Web, pages: list[dict[str, str]]
) -> None:
    create_function("place-order")
    publish("place-order", 3)
    assert sqlite_web.apply(doc("place-order", current="2"))["changed"] is True
    assert versions_of(sqlite_web, "place-order") == {str(n): f"{ARN}:{n}" for n in (1, 2, 3)}

    before = sqlite_web.fingerprint()
    r = post(sqlite_web, doc("place-order", current="9").replace("orders", "other"))
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "function place-order: current version '9' is not among the published versions of"
        " place-order (1, 2, 3)"
    )
    assert sqlite_web.fingerprint() == before


def test_a_missing_lambda_function_applies_nothing(
    sqlite_web: Web, pages: list[dict[str, str]]
) -> None:
    sqlite_web.apply()  # another app, which stays as it is
    before = sqlite_web.fingerprint()
    r = post(sqlite_web, doc("no-such-function"))
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "function place-order (versions: published): Lambda function 'no-such-function':"
        " AWS answered ResourceNotFoundException: Function not found:"
        f" arn:aws:lambda:{REGION}:{ACCOUNT}:function:no-such-function"
    )
    assert sqlite_web.fingerprint() == before, "no app, function or version was created"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (
            "app: a\nfunctions:\n  f:\n    versions: published\n",
            "functions.f: Value error, versions: published needs lambda_function",
        ),
        (
            f"app: a\nfunctions:\n  f:\n    versions: published\n    lambda_function: {ARN}:3\n",
            f"names one version or alias ('3'): give the function itself, '{ARN}'",
        ),
        (
            "app: a\nfunctions:\n  f:\n    versions: all\n    lambda_function: f\n",
            "functions.f.versions: Value error, versions is a mapping of version name to"
            " target, or the word 'published'; got 'all'",
        ),
        (
            "app: a\nfunctions:\n  f:\n    versions: {v1: 'a.b:c'}\n    lambda_function: f\n",
            "lambda_function goes with versions: published",
        ),
        (
            "app: a\nfunctions:\n  f:\n    versions: {latest-published: 'a.b:c'}\n",
            "version name 'latest-published' is reserved",
        ),
    ],
    ids=["no-function", "qualified", "other-word", "function-with-a-map", "reserved-name"],
)
def test_a_published_declaration_that_cannot_apply_says_what_to_fix(
    sqlite_web: Web, pages: list[dict[str, str]], document: str, fragment: str
) -> None:
    before = sqlite_web.fingerprint()
    r = post(sqlite_web, document)
    assert r.status_code in (400, 422)
    assert fragment in r.json()["detail"]
    assert sqlite_web.fingerprint() == before
    assert pages == [], "a refused document never reaches AWS"


class _AwsRefuses(BaseHTTPRequestHandler):
    """Answers every Lambda call as AWS refuses one: 403 AccessDeniedException."""

    def do_GET(self) -> None:
        body = json.dumps({"Type": "User", "message": "not authorized to list versions"})
        self.send_response(403)
        self.send_header("x-amzn-errortype", "AccessDeniedException")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_args: Any) -> None:
        pass


def test_aws_refusing_is_a_502_with_its_message_and_applies_nothing(
    sqlite_web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AwsRefuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with aws_environment():
            monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{server.server_port}")
            before = sqlite_web.fingerprint()
            r = post(sqlite_web, doc())
    finally:
        server.shutdown()
        server.server_close()
    assert r.status_code == 502
    assert r.json()["detail"] == (
        f"function place-order (versions: published): Lambda function '{ARN}':"
        " AWS answered AccessDeniedException: not authorized to list versions"
    )
    assert sqlite_web.fingerprint() == before


def test_without_the_aws_extra_published_is_a_501_naming_it(
    sqlite_web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if not installed
    before = sqlite_web.fingerprint()
    r = post(sqlite_web, doc())
    assert r.status_code == 501
    assert "pip install 'coalmine[aws]'" in r.json()["detail"]
    assert sqlite_web.fingerprint() == before


# -- latest-published ----------------------------------------------------------------


def test_latest_published_registers_the_newest_and_releases_it(
    web: Web, pages: list[dict[str, str]]
) -> None:
    create_function("place-order")
    publish("place-order", 2)
    web.apply(doc())
    publish("place-order", 2)  # CI published 3 and 4 since; coalmine has 1 and 2

    r = start(web, {"place-order": "latest-published"})
    assert r.status_code == 201, r.text
    release = r.json()
    assert release["candidate"] == {"notify-user": "v1", "place-order": "4"}
    assert release["baseline"] == {"notify-user": "v1", "place-order": "1"}
    assert versions_of(web, "place-order") == {str(n): f"{ARN}:{n}" for n in (1, 2, 4)}
    events = web.client.get("/v1/events", params={"app": "orders"}, headers=web.as_("viewer"))
    registered = [e for e in events.json() if e["kind"] == "version_registered"]
    assert registered[-1]["data"] == {
        "function": "place-order",
        "version": "4",
        "target": f"{ARN}:4",
    }
    assert registered[-1]["actor"] == "test-deployer"


def test_latest_published_uses_a_version_registered_under_another_name(
    sqlite_web: Web, pages: list[dict[str, str]]
) -> None:
    create_function("place-order")
    publish("place-order", 2)
    named = (
        "app: orders\nfunctions:\n  place-order:\n    versions:\n"
        f"      stable: {ARN}:1\n      next: {ARN}:2\n    current: stable\n"
    )
    sqlite_web.apply(named)
    r = start(sqlite_web, {"place-order": "latest-published"})
    assert r.status_code == 201, r.text
    assert r.json()["candidate"] == {"place-order": "next"}
    assert set(versions_of(sqlite_web, "place-order")) == {"stable", "next"}


def test_latest_published_that_runs_already_is_nothing_to_release(
    sqlite_web: Web, pages: list[dict[str, str]]
) -> None:
    create_function("place-order")
    publish("place-order", 3)
    sqlite_web.apply(doc(current="3"))
    before = sqlite_web.fingerprint()
    r = start(sqlite_web, {"place-order": "latest-published"})
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "nothing to release: the newest published version of place-order is 3, which it runs"
    )
    assert sqlite_web.fingerprint() == before


@pytest.mark.parametrize(
    ("candidate", "status", "detail"),
    [
        (
            {"notify-user": "latest-published"},
            400,
            "function notify-user has no Lambda version, so 'latest-published' has no Lambda"
            " function to look at",
        ),
        ({"nobody": "latest-published"}, 404, "nobody"),
    ],
    ids=["no-lambda-version", "no-such-function"],
)
def test_latest_published_of_a_function_without_lambda_versions_is_refused(
    sqlite_web: Web,
    pages: list[dict[str, str]],
    candidate: dict[str, str],
    status: int,
    detail: str,
) -> None:
    create_function("place-order")
    publish("place-order", 1)
    sqlite_web.apply(doc())
    before = sqlite_web.fingerprint()
    r = start(sqlite_web, candidate)
    assert r.status_code == status
    assert detail in r.json()["detail"]
    assert sqlite_web.fingerprint() == before


def test_latest_published_of_a_deleted_lambda_function_starts_nothing(
    sqlite_web: Web, pages: list[dict[str, str]]
) -> None:
    create_function("place-order")
    publish("place-order", 2)
    sqlite_web.apply(doc())
    boto3.client("lambda", region_name=REGION).delete_function(FunctionName="place-order")
    before = sqlite_web.fingerprint()
    r = start(sqlite_web, {"place-order": "latest-published"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith(
        f"function place-order (latest-published): Lambda function '{ARN}':"
        " AWS answered ResourceNotFoundException"
    )
    assert sqlite_web.fingerprint() == before


def test_the_cli_starts_a_release_of_the_latest_published_version(
    sqlite_web: Web, pages: list[dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """`coalmine release start APP --set fn=latest-published`, as a CI pipeline runs it
    after `sam deploy` published a version, against a control plane on a real socket."""
    create_function("place-order")
    publish("place-order", 1)
    sqlite_web.apply(doc())
    publish("place-order", 1)  # what `sam deploy` did
    token = sqlite_web.secrets["deployer"]
    with serve(sqlite_web.app) as url:
        args = ["--url", url, "--token", token]
        code = main(
            ["release", "start", "orders", "--set", "place-order=latest-published", "--json", *args]
        )
        out = capsys.readouterr()
        assert code == 0, out.err
        release = json.loads(out.out)
        assert release["candidate"]["place-order"] == "2"
        assert release["changed"] == ["place-order"]

        code = main(["release", "start", "orders", "--set", "place-order=latest-published", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1
        assert len(err) == 1
        assert "already has an active release" in err[0]
