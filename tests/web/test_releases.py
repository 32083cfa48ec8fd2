"""A release's whole life over HTTP: start, step, pause, resume, promote, roll back, events."""

from __future__ import annotations

import time
from typing import Any

from coalmine.core.machine import Tick
from tests.web.conftest import Web


def _tick(web: Web, release_id: str) -> None:
    """What the rollout controller does when a release's timer comes due."""
    assert web.service.releases.advance(release_id, Tick(time.time() + 1e6)) is not None


def test_release_lifecycle(web: Web) -> None:
    c, dep, view = web.client, web.as_("deployer"), web.as_("viewer")
    applied = web.apply()
    assert applied["changed"] is True

    def post(path: str, body: Any = None) -> Any:
        return c.post(path, json=body, headers=dep)

    # start: only the changed function moves; unchanged ones keep one version
    r = post("/v1/apps/shop/releases", {"candidate": {"api": "v2"}})
    assert r.status_code == 201, r.text
    rel = r.json()
    rid = rel["id"]
    assert (rel["phase"], rel["exposure"], rel["changed"]) == ("pending", 0, ["api"])
    assert rel["baseline"] == {"api": "v1", "worker": "v1"}
    assert rel["candidate"] == {"api": "v2", "worker": "v1"}
    assert rel["strategy"] == "Linear10PercentEvery1Minute"
    assert len(rel["steps"]) == 10
    assert c.get("/v1/apps/shop", headers=view).json()["active_release"] == rid

    # one active release per app
    r = post("/v1/apps/shop/releases", {"candidate": {"worker": "v1"}})
    assert r.status_code == 409
    assert r.json() == {
        "detail": f"app 'shop' already has an active release {rid} (pending); promote or roll it"
        " back first"
    }

    # operations the phase does not allow are 409 with the machine's message
    r = post(f"/v1/releases/{rid}/pause")
    assert r.status_code == 409
    assert r.json() == {
        "detail": "cannot pause a release that is pending; only a running or promoting one"
    }
    r = post(f"/v1/releases/{rid}/resume")
    assert r.status_code == 409
    assert "only a paused one" in r.json()["detail"]

    _tick(web, rid)
    rel = c.get(f"/v1/releases/{rid}", headers=view).json()
    assert (rel["phase"], rel["exposure"], rel["step"]) == ("running", 1000, 0)

    r = post(f"/v1/releases/{rid}/pause", {"reason": "looking at p99"})
    assert r.status_code == 200
    assert r.json()["phase"] == "paused"
    assert r.json()["reason"] == "looking at p99"
    assert post(f"/v1/releases/{rid}/pause").status_code == 409
    r = post(f"/v1/releases/{rid}/resume")
    assert r.status_code == 200
    assert r.json()["phase"] == "running"
    r = post(f"/v1/releases/{rid}/promote", {"reason": "looks good"})
    assert r.status_code == 200
    assert (r.json()["phase"], r.json()["exposure"]) == ("promoting", 10000)
    assert post(f"/v1/releases/{rid}/resume").status_code == 409
    _tick(web, rid)
    rel = c.get(f"/v1/releases/{rid}", headers=view).json()
    assert rel["phase"] == "promoted"
    assert rel["finished_at"] is not None
    app = c.get("/v1/apps/shop", headers=view).json()
    assert app["active_release"] is None
    assert {f["name"]: f["current_version"] for f in app["functions"]} == {
        "api": "v2",
        "worker": "v1",
    }
    r = post(f"/v1/releases/{rid}/rollback")
    assert r.status_code == 409
    assert r.json() == {"detail": "cannot roll back a release that is promoted"}

    # a second release, registered over HTTP, rolled back by an operator
    r = post(
        "/v1/apps/shop/functions/worker/versions",
        {"name": "v2", "target": "shop.worker_v2:handler"},
    )
    assert r.status_code == 201
    assert r.json()["name"] == "v2"
    r = post("/v1/apps/shop/releases", {"candidate": {"worker": "v2"}, "strategy": "AllAtOnce"})
    assert r.status_code == 201, r.text
    rid2 = r.json()["id"]
    assert rid2 != rid
    assert r.json()["baseline"] == {"api": "v2", "worker": "v1"}
    _tick(web, rid2)
    r = post(f"/v1/releases/{rid2}/rollback", {"reason": "error rate 4%"})
    assert r.status_code == 200
    assert (r.json()["phase"], r.json()["reason"]) == ("rolling_back", "error rate 4%")
    assert post(f"/v1/releases/{rid2}/rollback").status_code == 409
    _tick(web, rid2)
    assert c.get(f"/v1/releases/{rid2}", headers=view).json()["phase"] == "rolled_back"
    assert post(f"/v1/releases/{rid2}/promote").status_code == 409

    # listings and the audit log
    listed = c.get("/v1/apps/shop/releases", headers=view).json()
    assert [x["id"] for x in listed] == [rid2, rid]
    assert [x["id"] for x in c.get("/v1/apps/shop/releases?limit=1", headers=view).json()] == [rid2]
    kinds = [e["kind"] for e in c.get(f"/v1/releases/{rid}/events", headers=view).json()]
    assert kinds == ["created", "started", "paused", "resumed", "promoting", "promoted"]
    events = c.get(f"/v1/releases/{rid2}/events", headers=view).json()
    assert [e["kind"] for e in events] == ["created", "started", "rolling_back", "rolled_back"]
    assert events[2]["actor"] == "test-deployer"
    assert events[2]["data"] == {"reason": "error rate 4%"}

    every = c.get("/v1/events?app=shop&limit=1000", headers=view).json()
    ids = [e["id"] for e in every]
    assert ids == sorted(ids)
    assert len(ids) > 10
    page = c.get(f"/v1/events?app=shop&after={ids[4]}&limit=3", headers=view).json()
    assert [e["id"] for e in page] == ids[5:8]
    by_release = c.get(f"/v1/events?release={rid2}", headers=view).json()
    assert [e["id"] for e in by_release] == [e["id"] for e in events]


def test_unknown_things_are_404(sqlite_web: Web) -> None:
    c, view, dep = sqlite_web.client, sqlite_web.as_("viewer"), sqlite_web.as_("deployer")
    for path, detail in [
        ("/v1/apps/nope", "no app named 'nope'"),
        ("/v1/apps/nope/releases", "no app named 'nope'"),
        ("/v1/apps/nope/routing", "no app named 'nope'"),
        ("/v1/apps/nope/routing/stream", "no app named 'nope'"),
        ("/v1/releases/nope-1", "no release with id 'nope-1'"),
        ("/v1/releases/nope-1/events", "no release with id 'nope-1'"),
        ("/v1/events?app=nope", "no app named 'nope'"),
    ]:
        r = c.get(path, headers=view)
        assert (r.status_code, r.json()) == (404, {"detail": detail}), path
    r = c.post("/v1/releases/nope-1/promote", headers=dep)
    assert (r.status_code, r.json()) == (404, {"detail": "no release with id 'nope-1'"})
    sqlite_web.apply()
    r = c.post(
        "/v1/apps/shop/functions/mailer/versions", json={"name": "v1", "target": "m:h"}, headers=dep
    )
    assert r.status_code == 404
    assert r.json()["detail"] == "app 'shop' has no function named 'mailer'"
