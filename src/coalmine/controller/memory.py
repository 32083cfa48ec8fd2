"""In-memory twins of the controller's ports, shipped like httpx's ``MockTransport``.

Each implements one Protocol of `coalmine.core.ports` with no database and
no network, and passes the same contract tests as the real implementation
(``tests/controller/test_port_contracts.py``; ``tests/ports/`` for
`MemoryLambdaVersions`):

| twin | port | the real one |
|---|---|---|
| `MemoryReleaseStore` | `ReleaseStore` | `coalmine.controller.releases.ReleaseService` |
| `MemoryMetrics` | `MetricsProvider` | `coalmine.controller.metrics.MetricsService` |
| `ScriptedAlarm` | `AlarmSource` | `coalmine.integrations.prometheus.PrometheusAlarm` |
| `CallableHookRunner` | `HookRunner` | `coalmine.controller.hooks.HttpHookRunner` |
| `MemoryLambdaVersions` | `LambdaVersions` | `coalmine.integrations.lambda_versions.Boto3LambdaVersions` |
| `MemoryLambdaAliases` | `LambdaAliases` | `coalmine.integrations.lambda_alias.Boto3LambdaAliases` |

(`coalmine.controller.leader.SoleLeadership` is the twin of `Leadership`.)
Use them to drive a `coalmine.controller.loop.Controller` in a test or an
example without a store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from coalmine.core.alarms import AlarmEvaluation, EvaluationState, validate_alarm_name
from coalmine.core.alias import AliasCallFailed, AliasRouting
from coalmine.core.analysis import judged
from coalmine.core.errors import Conflict, InvalidInput, NotFound
from coalmine.core.histogram import VersionMetrics
from coalmine.core.machine import Event, EventKind, Hook, transition
from coalmine.core.model import Channel, unqualified_lambda_function
from coalmine.core.ports import HookOutcome, MetricsQuery, PublishedVersion, Transitioned
from coalmine.core.records import HookConfig, ReleaseRecord

__all__ = [
    "CallableHookRunner",
    "MemoryLambdaVersions",
    "MemoryLambdaAliases",
    "MemoryMetrics",
    "MemoryReleaseStore",
    "ScriptedAlarm",
]


class MemoryReleaseStore:
    """Releases held in a dict; `advance` is atomic per release and checks ``row_version``."""

    def __init__(self, releases: Iterable[ReleaseRecord] = (), *, clock: Callable[[], float]):
        self.clock = clock
        self._lock = threading.Lock()
        self._releases = {r.id: r for r in releases}
        self.events: list[tuple[str, EventKind, str]] = []
        """(release id, kind, message) of every transition, in order"""

    def put(self, release: ReleaseRecord) -> None:
        """Add or replace a release (as an operator's write would)."""
        with self._lock:
            self._releases[release.id] = release

    def get(self, release_id: str) -> ReleaseRecord:
        with self._lock:
            try:
                return self._releases[release_id]
            except KeyError:
                raise NotFound(f"no release with id {release_id!r}") from None

    def due(self, now: float) -> list[str]:
        with self._lock:
            due = [
                r
                for r in self._releases.values()
                if r.next_action_at is not None and r.next_action_at <= now
            ]
        return [r.id for r in sorted(due, key=lambda r: cast(float, r.next_action_at))]

    def next_due_at(self) -> float | None:
        with self._lock:
            timers = [r.next_action_at for r in self._releases.values()]
        return min((t for t in timers if t is not None), default=None)

    def advance(
        self, release_id: str, event: Event, actor: str = "controller"
    ) -> Transitioned | None:
        before = self.get(release_id)
        t = transition(
            before.strategy,
            frozenset(before.hooks),
            before.progress,
            event,
            hook_deadline=before.hook_deadline,
            gated=judged(before.analysis),
        )
        if t is None:
            return None
        after = before.after(t, self.clock())
        with self._lock:
            if self._releases[release_id].row_version != before.row_version:
                raise Conflict(
                    f"release {release_id} was changed by someone else at the same time; try again"
                )
            self._releases[release_id] = after
            self.events.append((release_id, t.kind, t.message))
        return Transitioned(after, t)


class MemoryMetrics:
    """Per-version metric windows in a dict; `add` merges a window's counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, str, str, float], VersionMetrics] = {}

    def add(self, start: float, metrics: VersionMetrics) -> None:
        """Merge ``metrics`` into the window that starts at ``start``."""
        key = (metrics.app, metrics.function, metrics.version, str(metrics.channel), start)
        with self._lock:
            if key in self._windows:
                self._windows[key].merge(metrics)
            else:
                self._windows[key] = metrics.copy()

    def metrics_for(
        self,
        app: str,
        function: str,
        version: str,
        channel: str,
        *,
        since: float,
        until: float | None = None,
    ) -> VersionMetrics:
        out = VersionMetrics(app, function, version, cast(Channel, channel))  # validates
        with self._lock:
            for (a, f, v, c, start), m in sorted(self._windows.items(), key=lambda kv: kv[0][4]):
                wanted = (a, f, v, c) == (app, function, version, str(out.channel))
                if wanted and since <= start and (until is None or start < until):
                    out.merge(m)
        return out

    def metrics_for_many(
        self,
        app: str,
        queries: Sequence[MetricsQuery],
        *,
        since: float,
        until: float | None = None,
    ) -> list[VersionMetrics]:
        return [self.metrics_for(app, f, v, c, since=since, until=until) for f, v, c in queries]


class ScriptedAlarm:
    """An alarm source that answers what it is told: ``state`` now, ``before`` for ``at=``."""

    def __init__(
        self,
        name: str,
        state: EvaluationState = EvaluationState.OK,
        *,
        before: EvaluationState | None = None,
        detail: str = "scripted",
    ) -> None:
        self._name = validate_alarm_name(name)
        self.state = state
        self.before = before
        self.detail = detail
        self.calls: list[float | None] = []

    @property
    def name(self) -> str:
        return self._name

    def evaluate(self, *, at: float | None = None) -> AlarmEvaluation:
        self.calls.append(at)
        state = self.state if at is None or self.before is None else self.before
        return AlarmEvaluation(self._name, state, self.detail)


class CallableHookRunner:
    """A hook runner from a function: ``decide(release, hook, spec) -> bool | HookOutcome``.

    A function that raises fails the hook with the error as its detail (as a
    hook runner must never raise for a failing hook).
    """

    def __init__(
        self, decide: Callable[[ReleaseRecord, Hook, HookConfig], bool | HookOutcome]
    ) -> None:
        self.decide = decide
        self.calls: list[tuple[str, Hook]] = []

    def run(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> HookOutcome:
        self.calls.append((release.id, hook))
        try:
            answer = self.decide(release, hook, spec)
        except Exception as exc:  # a runner never raises: the hook fails
            return HookOutcome(False, f"{hook} hook {spec.where} failed: {exc}")
        if isinstance(answer, HookOutcome):
            return answer
        verdict = "passed" if answer else "failed"
        return HookOutcome(bool(answer), f"{hook} hook {spec.where} {verdict}")


class MemoryLambdaVersions:
    """Lambda functions of one account and region, and their published versions.

    `create` a function, `publish` versions of it; `published` answers as AWS
    would (by name or ARN; an unknown function is an InvalidInput in AWS's
    words). Set ``failure`` to an exception to make every call raise it (AWS
    unreachable). Every call's function is kept in ``calls``.
    """

    def __init__(self, *, region: str = "us-east-1", account: str = "123456789012") -> None:
        self.region = region
        self.account = account
        self._lock = threading.Lock()
        self._published: dict[str, int] = {}
        self.failure: Exception | None = None
        self.calls: list[str] = []

    def arn(self, name: str) -> str:
        """The unqualified ARN of function ``name``."""
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{name}"

    def create(self, name: str) -> str:
        """Create function ``name`` (only ``$LATEST``, no version yet); its ARN."""
        with self._lock:
            self._published.setdefault(name, 0)
        return self.arn(name)

    def publish(self, name: str, count: int = 1) -> list[PublishedVersion]:
        """Publish ``count`` new versions of ``name``; the versions published."""
        with self._lock:
            first = self._published[name] + 1
            self._published[name] += count
        return [
            PublishedVersion(str(n), f"{self.arn(name)}:{n}") for n in range(first, first + count)
        ]

    def published(self, function: str) -> list[PublishedVersion]:
        self.calls.append(function)
        if self.failure is not None:
            raise self.failure
        name = unqualified_lambda_function(function, "Lambda function")
        bare = name.rsplit(":", 1)[-1]
        with self._lock:
            count = self._published.get(bare) if name in (bare, self.arn(bare)) else None
        if count is None:
            raise InvalidInput(
                f"Lambda function {function!r}: AWS answered ResourceNotFoundException:"
                f" Function not found: {self.arn(bare) if name == bare else name}"
            )
        return [PublishedVersion(str(n), f"{self.arn(bare)}:{n}") for n in range(1, count + 1)]


class MemoryLambdaAliases:
    """Lambda functions' published versions and aliases in dicts, checked as UpdateAlias checks.

    `publish` and `create_alias` set the scene; `fail_next` makes the next
    calls fail (a throttle, a missing permission) the way the boto3 one does.
    A function is named by its bare name or its unqualified ARN, as with AWS.
    ``calls`` keeps (operation, function, alias) of every call, in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, set[str]] = {}
        self._aliases: dict[tuple[str, str], AliasRouting] = {}
        self._failures: list[str] = []
        self.calls: list[tuple[str, str, str]] = []

    @staticmethod
    def _name(function: str) -> str:
        return function.rsplit(":", 1)[-1] if function.startswith("arn:") else function

    def publish(self, function: str, *versions: str) -> None:
        """Add published ``versions`` of ``function``."""
        with self._lock:
            self._versions.setdefault(self._name(function), set()).update(versions)

    def create_alias(self, function: str, alias: str, version: str) -> None:
        with self._lock:
            self._aliases[self._name(function), alias] = AliasRouting(version)

    def fail_next(self, times: int, message: str = "ThrottlingException: Rate exceeded") -> None:
        """The next ``times`` calls raise `AliasCallFailed` with ``message``."""
        with self._lock:
            self._failures.extend([message] * times)

    def _enter(self, operation: str, function: str, alias: str) -> tuple[str, str]:
        self.calls.append((operation, function, alias))
        if self._failures:
            raise AliasCallFailed(self._failures.pop(0))
        key = (self._name(function), alias)
        if key not in self._aliases:
            raise AliasCallFailed(
                f"ResourceNotFoundException: Cannot find alias {alias} of function {function}"
            )
        return key

    def get(self, function: str, alias: str) -> AliasRouting:
        with self._lock:
            return self._aliases[self._enter("GetAlias", function, alias)]

    def update(self, function: str, alias: str, routing: AliasRouting) -> AliasRouting:
        with self._lock:
            key = self._enter("UpdateAlias", function, alias)
            published = self._versions.get(key[0], set())
            for version in (routing.version, *routing.weights):
                if version not in published:
                    raise AliasCallFailed(
                        f"ResourceNotFoundException: Function not found: {function}:{version}"
                    )
            if any(not 0 <= w <= 1 for w in routing.weights.values()):
                raise AliasCallFailed("InvalidParameterValueException: weights must be in [0, 1]")
            if routing.version in routing.weights:
                raise AliasCallFailed(
                    "InvalidParameterValueException: the alias's own version cannot have a weight"
                )
            self._aliases[key] = routing
            return routing
