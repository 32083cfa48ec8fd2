"""Lifecycle hooks: `HttpHookRunner`, the HTTP implementation of `coalmine.core.ports.HookRunner`.

A hook is CodeDeploy's ``before_allow_traffic`` (run before the first user
sees the candidate) or ``after_allow_traffic`` (run once every user does,
before the release is promoted). The controller runs a hook outside any
database transaction and reports its `HookOutcome` back to the state
machine; a failed hook rolls the release back. Hooks are at-least-once: a
controller that dies while a hook runs runs it again after the hook deadline,
so a hook endpoint must tolerate being called twice for one release.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from coalmine.controller.schemas import ReleaseRead
from coalmine.core.machine import Hook
from coalmine.core.ports import HookOutcome
from coalmine.core.records import HookConfig, ReleaseRecord

__all__ = ["HttpHookRunner", "hook_payload"]

MAX_BACKOFF = 2.0
"""seconds: the longest pause between two attempts of a hook"""
_BODY_EXCERPT = 200


def hook_payload(release: ReleaseRecord, hook: Hook, attempt: int) -> dict[str, Any]:
    """The JSON body POSTed to a hook.

    The release is sent without its hooks' headers: they may hold another
    endpoint's credentials.
    """
    body = ReleaseRead.of(release).model_dump(mode="json")
    body["hooks"] = {
        str(name): {"url": spec.url, "timeout": spec.timeout, "retries": spec.retries}
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
        self._client = client or httpx.Client(headers={"user-agent": "coalmine-controller"})
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
        return float(min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1)))

    def run(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> HookOutcome:
        attempts = spec.retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self._sleep(self.delay(attempt - 1))
            problem = self._attempt(release, hook, spec, attempt)
            if not problem:
                tries = f" on attempt {attempt}" if attempt > 1 else ""
                return HookOutcome(True, f"{hook} hook {spec.url} passed{tries}")
        plural = "s" if attempts > 1 else ""
        return HookOutcome(
            False, f"{hook} hook {spec.url} {problem} after {attempts} attempt{plural}"
        )

    def _attempt(self, release: ReleaseRecord, hook: Hook, spec: HookConfig, attempt: int) -> str:
        """One POST; an empty string when it passed, else what went wrong."""
        try:
            response = self._client.post(
                spec.url,
                json=hook_payload(release, hook, attempt),
                headers=spec.headers,
                timeout=httpx.Timeout(spec.timeout),
            )
        except httpx.TimeoutException:
            return f"timed out ({spec.timeout:g}s)"
        except httpx.HTTPError as exc:
            return f"could not be reached ({type(exc).__name__}: {exc})"
        if response.is_success:
            return ""
        excerpt = response.text.strip()[:_BODY_EXCERPT]
        return f"answered {response.status_code}" + (f" ({excerpt!r})" if excerpt else "")
