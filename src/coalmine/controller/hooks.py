"""Lifecycle hooks: `HttpHookRunner` (HTTP) and `HookDispatcher`, the runner the controller
uses, which hands each hook to the runner of its kind (a ``url`` to `HttpHookRunner`, a
``lambda`` to `coalmine.integrations.lambda_hooks.LambdaHookRunner`).

A hook is CodeDeploy's ``before_allow_traffic`` (run before the first user
sees the candidate) or ``after_allow_traffic`` (run once every user does,
before the release is promoted). The controller runs a hook outside any
database transaction and reports its `HookOutcome` back to the state
machine; a failed hook rolls the release back. Hooks are at-least-once: a
controller that dies while a hook runs runs it again after the hook deadline,
so a hook endpoint must tolerate being called twice for one release.

Each attempt of an HTTP hook has ``timeout`` seconds in all (wall clock,
reading its answer included, so an endpoint that drips its answer does
not hold it longer); the controller runs hooks off its tick within a
total deadline (`coalmine.controller.hook_pool`). At most `MAX_ANSWER`
bytes of an answer are read, and none of it is repeated in the outcome:
a status says enough, and the answer may hold what its server should not
tell the viewers of events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from coalmine.controller.schemas import ReleaseRead
from coalmine.core.attempts import MAX_BACKOFF, Attempt, backoff_delay, run_attempts
from coalmine.core.machine import Hook
from coalmine.core.ports import HookOutcome, HookRunner
from coalmine.core.records import HookConfig, ReleaseRecord
from coalmine.integrations.lambda_hooks import LambdaHookRunner
from coalmine.integrations.outbound import deadline as outbound_deadline
from coalmine.integrations.outbound import guarded_transport, read_capped

__all__ = ["MAX_ANSWER", "MAX_BACKOFF", "HookDispatcher", "HttpHookRunner", "hook_payload"]

MAX_ANSWER = 64 * 1024
"""bytes of a hook's answer read at most; the rest is never read"""


def hook_payload(release: ReleaseRecord, hook: Hook, attempt: int) -> dict[str, Any]:
    """The JSON body POSTed to a hook (and a Lambda hook's event).

    The release is sent without its hooks' headers: they may hold another
    endpoint's credentials.
    """
    body = ReleaseRead.of(release).model_dump(mode="json")
    body["hooks"] = {
        str(name): {k: v for k, v in spec.to_dict().items() if k != "headers"}
        for name, spec in release.hooks.items()
    }
    return {"hook": str(hook), "app": release.app, "release": body, "attempt": attempt}


class HttpHookRunner:
    """POSTs the hook payload to ``spec.url``; a 2xx answer passes.

    Any other status, a timeout or a connection error is a failed attempt;
    the hook is tried ``spec.retries`` more times, waiting ``backoff``,
    ``2 * backoff``, ... (at most `MAX_BACKOFF` seconds) between attempts.
    """

    def __init__(
        self,
        *,
        backoff: float = 0.25,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.backoff = backoff
        self._client = client or httpx.Client(
            headers={"user-agent": "coalmine-controller"}, transport=guarded_transport()
        )
        self._owns_client = client is None
        self._sleep = sleep

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpHookRunner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt ``attempt`` (1-based)."""
        return backoff_delay(self.backoff, attempt)

    def run(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> HookOutcome:
        return run_attempts(
            f"{hook} hook {spec.where}",
            lambda attempt: self._attempt(release, hook, spec, attempt),
            retries=spec.retries,
            backoff=self.backoff,
            sleep=self._sleep,
        )

    def _attempt(
        self, release: ReleaseRecord, hook: Hook, spec: HookConfig, attempt: int
    ) -> Attempt:
        """One POST, ``spec.timeout`` seconds in all."""
        if spec.url is None:
            return Attempt(f"is not an HTTP hook ({spec.where})", final=True)
        timed_out = Attempt(f"timed out ({spec.timeout:g}s)")
        try:
            with (
                outbound_deadline(spec.timeout) as deadline,
                self._client.stream(
                    "POST",
                    spec.url,
                    json=hook_payload(release, hook, attempt),
                    headers=spec.headers,
                    timeout=httpx.Timeout(spec.timeout),
                ) as response,
            ):
                # read (to its end or MAX_ANSWER) so that the connection can be reused
                if read_capped(response, MAX_ANSWER, deadline) is None:
                    return timed_out
                status = response.status_code
        except httpx.TimeoutException:
            return timed_out
        except httpx.HTTPError as exc:
            return Attempt(f"could not be reached ({type(exc).__name__}: {exc})")
        if time.monotonic() > deadline:
            return timed_out
        if 200 <= status < 300:
            return Attempt()
        return Attempt(f"answered {status}")


class HookDispatcher:
    """The `HookRunner` the controller runs: a ``url`` hook goes to ``http``, a ``lambda``
    hook to ``lambda_`` (by default a new `HttpHookRunner`, and a `LambdaHookRunner` whose
    event is `hook_payload`)."""

    def __init__(self, http: HookRunner | None = None, lambda_: HookRunner | None = None) -> None:
        self._owned: list[HttpHookRunner | LambdaHookRunner] = []
        if http is None:
            http = HttpHookRunner()
            self._owned.append(http)
        if lambda_ is None:
            lambda_ = LambdaHookRunner(payload=hook_payload)
            self._owned.append(lambda_)
        self.http = http
        self.lambda_ = lambda_

    def run(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> HookOutcome:
        runner = self.lambda_ if spec.lambda_function is not None else self.http
        return runner.run(release, hook, spec)

    def close(self) -> None:
        """Close the runners it made (runners given to it belong to the caller)."""
        for runner in self._owned:
            runner.close()

    def __enter__(self) -> HookDispatcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
