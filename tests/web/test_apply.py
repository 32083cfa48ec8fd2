"""Declarative apply, and bad input: each refused with a message that says what to fix,
each leaving the store exactly as it was."""

from __future__ import annotations

import json
import time

import httpx
import yaml

from coalmine.core.machine import Tick
from tests.web.conftest import APP_DOC, Web


def _post_doc(
    web: Web, body: str | bytes, content_type: str = "application/yaml", **params: str
) -> httpx.Response:
    r: httpx.Response = web.client.post(
        "/v1/apply",
        content=body,
        params=params,
        headers={**web.as_("deployer"), "Content-Type": content_type},
    )
    return r


def test_apply_is_idempotent_and_dry_run_changes_nothing(web: Web) -> None:
    first = web.apply()
    assert first["changed"] is True
    assert first["dry_run"] is False
    assert "create app shop" in first["changes"]
    assert "set api current version v1" in first["changes"]
    after_first = web.fingerprint()
    assert web.apply() == {
        "app": "shop",
        "changed": False,
        "changes": [],
        "dry_run": False,
        "release": None,
        "notes": [],
    }
    assert web.fingerprint() == after_first

    grown = APP_DOC.replace(
        "release:",
        "  mailer:\n    versions: {v1: 'shop.mailer:handler'}\n    current: v1\nrelease:",
    )
    preview = web.apply(grown, dry_run="true")
    assert preview["dry_run"] is True
    assert preview["changed"] is True
    assert preview["changes"] == [
        "create function mailer",
        "register mailer v1 -> shop.mailer:handler",
        "set mailer current version v1",
    ]
    assert web.fingerprint() == after_first

    # the same document as JSON
    r = _post_doc(web, json.dumps(yaml.safe_load(grown)), "application/json")
    assert r.status_code == 200
    assert r.json()["changes"] == preview["changes"]
    assert web.apply(grown)["changed"] is False
    app = web.client.get("/v1/apps/shop", headers=web.as_("viewer")).json()
    assert [f["name"] for f in app["functions"]] == ["api", "mailer", "worker"]


def test_bad_input_is_refused_and_changes_nothing(web: Web) -> None:
    web.apply()
    c, dep = web.client, web.as_("deployer")
    before = web.fingerprint()

    def refused(status: int, fragment: str, method: str, path: str, body: object) -> None:
        r = c.request(method, path, json=body, headers=dep)
        assert r.status_code == status, (path, body, r.text)
        assert fragment in r.json()["detail"], r.json()
        assert web.fingerprint() == before, (path, body)

    releases = "/v1/apps/shop/releases"
    refused(
        404, "no app named 'nope'", "POST", "/v1/apps/nope/releases", {"candidate": {"api": "v2"}}
    )
    refused(404, "no app named 'nope'", "POST", "/v1/apps/nope/functions", {"name": "x"})
    refused(
        400, "unknown strategy", "POST", releases, {"candidate": {"api": "v2"}, "strategy": "Fast"}
    )
    refused(
        400,
        "a canary percentage must be 1 to 99",
        "POST",
        releases,
        {"candidate": {"api": "v2"}, "strategy": "Canary0Percent5Minutes"},
    )
    refused(
        400,
        "step 2: exposure 5% must be above the previous step's 10%",
        "POST",
        releases,
        {"candidate": {"api": "v2"}, "strategy": "10%:5m, 5%:5m, 100%"},
    )
    refused(
        400,
        "a strategy must end at 100%",
        "POST",
        releases,
        {"candidate": {"api": "v2"}, "strategy": [{"percent": 10, "hold": "5m"}]},
    )
    refused(
        400,
        "is out of range; use 0.01% to 100%",
        "POST",
        releases,
        {"candidate": {"api": "v2"}, "strategy": [{"exposure": 20000}]},
    )
    # a version that is not registered is not found (404), like an unknown app or release
    refused(
        404,
        "version 'v9' of api is not registered; register it first",
        "POST",
        releases,
        {"candidate": {"api": "v9"}},
    )
    refused(
        404, "is not registered", "PUT", "/v1/apps/shop/functions/api/current", {"version": "v9"}
    )
    refused(
        409,
        "versions are immutable",
        "POST",
        "/v1/apps/shop/functions/api/versions",
        {"name": "v1", "target": "shop.other:handler"},
    )
    refused(400, "invalid app name 'Shop!'", "POST", "/v1/apps", {"name": "Shop!"})
    refused(409, "app 'shop' already exists", "POST", "/v1/apps", {"name": "shop"})
    refused(
        422,
        "strategyy: Extra inputs are not permitted",
        "POST",
        releases,
        {"candidate": {"api": "v2"}, "strategyy": "AllAtOnce"},
    )
    refused(422, "candidate: Field required", "POST", releases, {})

    def bad_doc(
        status: int, fragment: str, doc: str, content_type: str = "application/yaml"
    ) -> str:
        r = _post_doc(web, doc, content_type)
        assert r.status_code == status, (doc, r.text)
        detail: str = r.json()["detail"]
        assert fragment in detail, detail
        assert web.fingerprint() == before, doc
        return detail

    detail = bad_doc(
        400,
        "malformed YAML at line 4, column 2: expected <block end>",
        "app: shop\nfunctions:\n  api: x\n bad: y\n",
    )
    assert detail.endswith("(while parsing a block mapping)")
    bad_doc(
        400,
        "malformed YAML at line 4, column 9",
        "app: shop\nfunctions:\n  api: [v1, v2\n  worker: x\n",
        "text/plain",
    )
    bad_doc(
        400,
        "the document is not JSON: Expecting property name enclosed in double quotes at line 1, column 16",
        '{"app": "shop",',
        "application/json",
    )
    bad_doc(400, "empty document", "  \n")
    bad_doc(400, "is a mapping with 'app'", "- app: shop\n")
    detail = bad_doc(422, "functionz: Extra inputs are not permitted", "app: shop\nfunctionz: {}\n")
    assert detail.count(";") == 0
    bad_doc(
        422,
        "functions.api.versions.v2: Input should be a valid string",
        "app: shop\nfunctions:\n  api:\n    versions: {v2: 7}\n",
    )
    bad_doc(
        400,
        "a linear percentage must be 1 to 50",
        "app: shop\nrelease:\n  strategy: Linear60PercentEvery1Minute\n",
    )
    # a document that is half valid changes nothing: new function first, then a clash
    clash = APP_DOC.replace("shop.api_v2:handler", "shop.api_v2_rebuilt:handler").replace(
        "release:", "  mailer:\n    versions: {v1: 'shop.mailer:handler'}\nrelease:"
    )
    bad_doc(409, "version v2 of api is registered with target 'shop.api_v2:handler'", clash)
    bad_doc(
        409,
        "change running versions with a release",
        APP_DOC.replace("current: v1\n  worker", "current: v2\n  worker"),
    )
    # dry runs are refused the same way
    r = _post_doc(web, clash, dry_run="true")
    assert r.status_code == 409
    assert web.fingerprint() == before


def test_documents_that_would_blow_up_are_refused(sqlite_web: Web) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(7)
    )
    r = _post_doc(
        sqlite_web,
        "app: shop\nrelease:\n  analysis:\n"
        + "".join("    " + line + "\n" for line in bomb.splitlines()),
    )
    assert r.status_code == 400
    assert "too large" in r.json()["detail"]
    r = _post_doc(sqlite_web, "app: shop\n# " + "x" * (1 << 20) + "\n")
    assert r.status_code == 413
    assert sqlite_web.service.catalog.list_apps() == []


GITOPS_DOC = """\
app: shop
functions:
  api:
    versions:
      v1: shop.api:handler
      v2: shop.api_v2:handler
    current: v1
    version: {api}
  worker:
    versions:
      v1: shop.worker:handler
    version: v1
release:
  strategy: {strategy}
  route_mode: request
  analysis: {{interval: 30s}}
"""


def _gitops(api: str, strategy: str = "Canary10Percent5Minutes") -> str:
    return GITOPS_DOC.format(api=api, strategy=strategy)


def _end(web: Web, release_id: str, command: str, reason: str = "") -> str:
    """An operator's promote or rollback, then the controller's tick that finishes it."""
    r = web.client.post(
        f"/v1/releases/{release_id}/{command}", json={"reason": reason}, headers=web.as_("deployer")
    )
    assert r.status_code == 200, r.text
    web.service.releases.advance(release_id, Tick(time.time() + 1e6))
    return web.service.releases.get(release_id).phase.value


def _running(web: Web) -> dict[str, str | None]:
    app = web.client.get("/v1/apps/shop", headers=web.as_("viewer")).json()
    return {f["name"]: f["current_version"] for f in app["functions"]}


def test_a_files_new_version_starts_a_release_with_its_settings(web: Web) -> None:
    first = web.apply(_gitops("v1"))
    assert first["release"] is None
    assert "set worker current version v1" in first["changes"]  # version seeds a new function
    assert _running(web) == {"api": "v1", "worker": "v1"}

    # a dry run says which release it would start, and starts none
    before = web.fingerprint()
    preview = web.apply(_gitops("v2"), dry_run="true")
    assert preview["changes"][-1].startswith("start release shop-1: api v1->v2")
    assert web.fingerprint() == before

    applied = web.apply(_gitops("v2"))
    rid = applied["release"]
    assert rid == "shop-1"
    assert applied["changes"] == [
        f"start release {rid}: api v1->v2 (strategy Canary10Percent5Minutes, route mode request)"
    ]
    rel = web.client.get(f"/v1/releases/{rid}", headers=web.as_("viewer")).json()
    assert rel["candidate"] == {"api": "v2", "worker": "v1"}
    assert (rel["strategy"], rel["route_mode"]) == ("Canary10Percent5Minutes", "request")
    assert rel["analysis"] == {"interval": "30s"}
    events = web.client.get(f"/v1/releases/{rid}/events", headers=web.as_("viewer")).json()
    assert [(e["kind"], e["actor"]) for e in events] == [("created", "test-deployer")]

    # the same file while its release runs: nothing new, and it says which release it is
    during = web.apply(_gitops("v2"))
    assert (during["changed"], during["release"]) == (False, rid)
    assert during["notes"] == [
        f"release {rid} (pending, exposure 0%) is moving api v1->v2, as the file says"
    ]

    assert _end(web, rid, "promote") == "promoted"
    assert _running(web) == {"api": "v2", "worker": "v1"}
    # after the promotion the same file is unchanged: `current: v1` was where api started
    settled = web.fingerprint()
    assert web.apply(_gitops("v2")) == {
        "app": "shop",
        "changed": False,
        "changes": [],
        "dry_run": False,
        "release": None,
        "notes": [],
    }
    assert web.fingerprint() == settled

    # going back is a release like any other
    back = web.apply(_gitops("v1", strategy="AllAtOnce"))
    assert back["changes"] == [
        "update release settings",
        "start release shop-2: api v2->v1 (strategy AllAtOnce, route mode request)",
    ]


def test_a_file_that_disagrees_with_the_active_release_is_refused(web: Web) -> None:
    web.apply(_gitops("v1"))
    rid = web.apply(_gitops("v2"))["release"]
    grown = _gitops("v3").replace(
        "      v2: shop.api_v2:handler\n",
        "      v2: shop.api_v2:handler\n      v3: shop.api_v3:handler\n",
    )
    before = web.fingerprint()
    r = _post_doc(web, grown)
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == (
        f"app 'shop' has an active release {rid} (pending) to api v2; the file says api v3:"
        f" wait until it ends, or roll it back (coalmine release rollback {rid}), then apply"
        " again"
    )
    assert web.fingerprint() == before  # not even v3 was registered

    # rolled back: the same file does not start it again, and says how to
    r = web.client.post(
        f"/v1/releases/{rid}/rollback", json={"reason": "p99 doubled"}, headers=web.as_("deployer")
    )
    assert r.json()["phase"] == "rolling_back"
    rolling = web.apply(_gitops("v2"))
    assert (rolling["changed"], rolling["release"]) == (False, None)
    assert rolling["notes"][0].startswith(f"not released again: release {rid} of api v1->v2 is")
    web.service.releases.advance(rid, Tick(time.time() + 1e6))
    assert web.service.releases.get(rid).phase.value == "rolled_back"
    again = web.apply(_gitops("v2"))
    assert (again["changed"], again["release"]) == (False, None)
    assert again["notes"] == [
        f"not released again: release {rid} of api v1->v2 was rolled back (p99 doubled); give the"
        " file a new version to release it, or the running ones to say so; to try the same"
        " again: coalmine release start shop --set api=v2"
    ]
    assert _running(web) == {"api": "v1", "worker": "v1"}
    # a new version in the file is a new release
    assert web.apply(grown)["release"] == "shop-2"


def test_version_must_be_declared_and_old_files_keep_working(web: Web) -> None:
    before = web.fingerprint()
    r = _post_doc(web, _gitops("v9"))
    assert r.status_code == 400
    assert r.json()["detail"] == "function api: version version 'v9' is not among its versions"
    assert web.fingerprint() == before
    # a file without version: still refuses a current other than the running one
    web.apply()
    r = _post_doc(web, APP_DOC.replace("current: v1\n  worker", "current: v2\n  worker"))
    assert r.status_code == 409
    assert "say version: v2 for api in the file" in r.json()["detail"]


def test_a_new_app_starts_on_current_and_releases_to_version_in_one_apply(web: Web) -> None:
    applied = web.apply(_gitops("v2"))
    assert applied["changes"][-2:] == [
        "set worker current version v1",
        "start release shop-1: api v1->v2 (strategy Canary10Percent5Minutes, route mode request)",
    ]
    assert "set api current version v1" in applied["changes"]
    assert applied["release"] == "shop-1"
    assert _running(web) == {"api": "v1", "worker": "v1"}  # until the release is promoted
