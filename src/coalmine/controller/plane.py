"""The control plane's services, built once over one store: what the API and the loop use.

One service per concern, each over the same unit of work
(`coalmine.store.uow.UnitOfWork`):

| attribute | service | owns |
|---|---|---|
| ``catalog`` | `CatalogService` | apps, functions, versions, ``apply`` (and the release a file asks for) |
| ``releases`` | `ReleaseService` | releases and their transitions, ``rollback`` |
| ``snapshots`` | `SnapshotService` | the routing snapshot and revision |
| ``audit`` | `AuditLog` | reading the audit log |
| ``metrics`` | `MetricsService` | per-version metric windows |
| ``runs`` | `AnalysisRunService` | analysis-run records |
| ``alarms`` | `AlarmService` | HTTP-raised alarms |

``lambda_versions`` is where the catalog and the releases read a Lambda
function's published versions (``versions: published``, a
``latest-published`` candidate): AWS by default, through boto3 imported on
first use (without the ``aws`` extra that use fails, naming the extra).
``lambda_aliases`` is where the catalog reads which published version a
function's alias (``release.lambda_alias``) routes to, the default current
version of a ``versions: published`` function (AWS by default too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from coalmine.controller.alarms import AlarmService
from coalmine.controller.audit import AuditLog
from coalmine.controller.catalog import CatalogService
from coalmine.controller.metrics import MetricsService
from coalmine.controller.releases import ReleaseService
from coalmine.controller.runs import AnalysisRunService
from coalmine.controller.snapshots import SnapshotService
from coalmine.core.ports import LambdaAliases, LambdaVersions
from coalmine.integrations.lambda_versions import Boto3LambdaVersions
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import Store
from coalmine.store.uow import EventSink, UnitOfWork

__all__ = ["ControlPlane", "EventSink"]


class ControlPlane:
    def __init__(
        self,
        store: Store,
        feed: ChangeFeed | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sinks: Iterable[EventSink] = (),
        lambda_versions: LambdaVersions | None = None,
        lambda_aliases: LambdaAliases | None = None,
    ) -> None:
        self.uow = UnitOfWork(store, feed, clock=clock, sinks=sinks)
        self.lambda_versions = (
            lambda_versions if lambda_versions is not None else Boto3LambdaVersions()
        )
        self.releases = ReleaseService(self.uow, self.lambda_versions)
        self.catalog = CatalogService(
            self.uow, self.lambda_versions, lambda_aliases, start_release=self.releases.start_in
        )
        self.snapshots = SnapshotService(self.uow)
        self.audit = AuditLog(self.uow)
        self.metrics = MetricsService(self.uow)
        self.runs = AnalysisRunService(self.uow)
        self.alarms = AlarmService(self.uow, self.releases)

    @property
    def store(self) -> Store:
        return self.uow.store

    @property
    def clock(self) -> Callable[[], float]:
        return self.uow.clock

    @property
    def sinks(self) -> list[EventSink]:
        """Told of every committed event (append to add one, e.g. the event webhooks)."""
        return self.uow.sinks
