"""Routing refreshed at invocation (no thread): fresh reads cost nothing, stale ones one
conditional GET, errors keep the last snapshot, a cold start reads the bundled file or cache."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from coalmine.sdk import Client, InvocationSync
from tests.sdk import APP, KEYRING, MockPlane, make_snapshot, serving


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sync(mock: MockPlane, clock: Clock, **kwargs: object) -> InvocationSync:
    return InvocationSync(
        "http://plane", "sdk-key", [APP], http=mock.http(), clock=clock, max_age=5.0, **kwargs
    )  # type: ignore[arg-type]


def test_a_fresh_snapshot_is_read_from_memory_and_a_stale_one_refreshed_with_an_etag() -> None:
    mock, clock = MockPlane(make_snapshot(1)), Clock()
    sync = _sync(mock, clock)
    snap = sync.snapshot(APP)
    assert snap is not None
    assert snap.revision == 1
    assert len(mock.requests) == 1
    assert "if-none-match" not in mock.requests[0].headers
    clock.now += 4.9
    assert sync.snapshot(APP) is snap
    assert len(mock.requests) == 1  # fresh: no request
    clock.now += 0.1
    assert sync.snapshot(APP) is snap
    assert len(mock.requests) == 2
    assert mock.requests[1].headers["if-none-match"] == snap.etag  # answered 304
    assert sync.status(APP).not_modified == 1
    mock.snapshots[APP] = make_snapshot(2, exposure=6000)
    clock.now += 5
    new = sync.snapshot(APP)
    assert new is not None
    assert new.revision == 2
    assert sync.status(APP).mode == "invocation"
    assert sync.status(APP).source == "poll"


def test_errors_keep_the_last_snapshot_and_retry_after_max_age(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mock, clock = MockPlane(make_snapshot(1)), Clock()
    sync = _sync(mock, clock)
    first = sync.snapshot(APP)
    mock.snapshots.clear()  # the control plane now answers 404
    clock.now += 5
    assert sync.snapshot(APP) is first  # fail static, no exception
    status = sync.status(APP)
    assert not status.connected
    assert status.last_error is not None
    assert "404" in status.last_error
    asked = len(mock.requests)
    clock.now += 1
    assert sync.snapshot(APP) is first
    assert len(mock.requests) == asked  # not retried before max_age
    mock.snapshots[APP] = make_snapshot(3)
    clock.now += 4
    again = sync.snapshot(APP)
    assert again is not None
    assert again.revision == 3
    assert sync.status(APP).connected


def test_an_older_revision_is_never_applied() -> None:
    mock, clock = MockPlane(make_snapshot(5)), Clock()
    sync = _sync(mock, clock)
    assert sync.snapshot(APP).revision == 5  # type: ignore[union-attr]
    mock.snapshots[APP] = make_snapshot(4)
    clock.now += 5
    assert sync.snapshot(APP).revision == 5  # type: ignore[union-attr]


def test_cold_start_from_a_bundled_snapshot_when_the_control_plane_is_down(
    tmp_path: Path,
) -> None:
    bundled = tmp_path / "routing.json"
    bundled.write_text(json.dumps(make_snapshot(7).to_dict()))
    down = httpx.Client(transport=httpx.MockTransport(_refuse))
    sync = InvocationSync("http://plane", "sdk-key", [APP], snapshot_file=bundled, http=down)
    snap = sync.snapshot(APP)
    assert snap is not None
    assert snap.revision == 7
    assert sync.status(APP).source == "bundle"
    assert not sync.status(APP).connected


def test_cold_start_takes_the_newer_of_bundle_and_cache_then_confirms_with_a_304(
    tmp_path: Path,
) -> None:
    bundled = tmp_path / "routing.json"
    bundled.write_text(json.dumps([make_snapshot(2).to_dict()]))
    mock, clock = MockPlane(make_snapshot(3)), Clock()
    cache = tmp_path / "cache"
    warm = _sync(mock, clock, cache_dir=cache)
    assert warm.snapshot(APP).revision == 3  # type: ignore[union-attr]
    assert json.loads((cache / f"{APP}.json").read_text())["revision"] == 3
    cold = _sync(mock, clock, cache_dir=cache, snapshot_file=bundled)
    assert cold.status(APP).source == "cache"
    assert cold.status(APP).revision == 3
    asked = len(mock.requests)
    assert cold.snapshot(APP).revision == 3  # type: ignore[union-attr]
    assert mock.requests[asked].headers["if-none-match"] == make_snapshot(3).etag
    assert cold.status(APP).source == "poll"
    assert cold.status(APP).not_modified == 1


def test_a_bad_snapshot_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "routing.json"
    bad.write_text("{not json")
    mock = MockPlane(make_snapshot(1))
    sync = InvocationSync("http://plane", "sdk-key", [APP], snapshot_file=bad, http=mock.http())
    assert "ignored the snapshot file" in caplog.text
    assert sync.snapshot(APP).revision == 1  # type: ignore[union-attr]


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_a_client_with_max_age_follows_a_real_control_plane_without_a_thread(
    tmp_path: Path,
) -> None:
    with serving(f"sqlite:///{tmp_path / 'plane.db'}") as plane:
        plane.seed()
        rel = plane.start_release()
        before = {t.name for t in threading.enumerate()}
        with Client(
            plane.url,
            plane.sdk_key(),
            apps=[APP],
            signing_keys=KEYRING,
            max_age=0.0,
            metrics=False,
        ) as client:
            assert not {t.name for t in threading.enumerate()} - before
            assert client.decide(APP, "u1").release_id == rel.id
            plane.service.releases.rollback(rel.id, "sdk-tests", "bad canary")
            # max_age=0: the next invocation asks again, and sees the rollback
            assert client.decide(APP, "u1").reason == "rolled_back"
            assert client.status(APP).source == "poll"
