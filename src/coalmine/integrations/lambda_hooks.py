"""`LambdaHookRunner`: lifecycle hooks that are Lambda functions (needs ``coalmine[aws]``).

The hook's function is invoked synchronously (``RequestResponse``) with the
JSON an HTTP hook is POSTed as its event. The function's answer is its
verdict, and a verdict is not retried:

* a function error (it raised, or ran out of time) fails the hook, with
  the function's ``errorType: errorMessage`` in the detail;
* an answer ``{"status": "Failed", "reason": "..."}`` fails it with the
  reason (``status`` in any case, so CodeDeploy's ``Failed`` reads too);
* any other answer passes.

An invoke that fails itself (throttled, denied, unreachable, no answer
within the hook's ``timeout``) is a failed attempt, tried again as the
hook's ``retries`` say. The client comes from the standard AWS chain
(credentials, ``AWS_ENDPOINT_URL_LAMBDA``), in the region a function ARN
names, else the chain's; boto3's own retries are off, the hook's apply.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from coalmine._extras import MissingExtraError, require
from coalmine.core.attempts import Attempt, run_attempts
from coalmine.core.machine import Hook
from coalmine.core.model import parse_lambda_function
from coalmine.core.ports import HookOutcome
from coalmine.core.records import HookConfig, ReleaseRecord

__all__ = ["FAILED", "LambdaHookRunner", "Payload", "verdict"]

Payload = Callable[[ReleaseRecord, Hook, int], Mapping[str, Any]]
"""the event of attempt ``n`` of a hook (`coalmine.controller.hooks.hook_payload`)"""
FAILED = "failed"
"""an answer's ``status`` (compared without case) that fails the hook"""
_EXCERPT = 300
_CONNECT_TIMEOUT = 10.0


def _excerpt(text: object) -> str:
    text = str(text).strip()
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _function_error(kind: str, raw: bytes) -> str:
    """``errorType: errorMessage`` of a function error's document (or its raw text)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "errorMessage" in doc:
        return _excerpt(f"{doc.get('errorType') or kind}: {doc['errorMessage']}")
    return _excerpt(raw.decode("utf-8", "replace") or kind)


def verdict(function_error: str | None, raw: bytes) -> Attempt:
    """What a hook function's answer says (see the module); a failure is final."""
    if function_error:
        return Attempt(f"failed ({_function_error(function_error, raw)})", final=True)
    try:
        answer = json.loads(raw) if raw.strip() else None
    except ValueError:
        return Attempt()  # no status, no verdict against the release
    if isinstance(answer, dict) and str(answer.get("status", "")).lower() == FAILED:
        reason = _excerpt(answer.get("reason") or answer.get("message") or "")
        return Attempt(f"answered Failed: {reason or 'no reason given'}", final=True)
    return Attempt()


class LambdaHookRunner:
    """A `coalmine.core.ports.HookRunner` for hooks with ``lambda`` (see the module).

    ``payload`` makes the event; ``client`` is a boto3 Lambda client to use
    for every hook (else one is made per region and timeout); attempts are
    ``backoff``, ``2 * backoff``, ... seconds apart, as an HTTP hook's.
    """

    def __init__(
        self,
        *,
        payload: Payload,
        backoff: float = 0.25,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.payload = payload
        self.backoff = backoff
        self._client = client
        self._clients: dict[tuple[str | None, float], Any] = {}
        self._lock = threading.Lock()
        self._sleep = sleep

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> LambdaHookRunner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _lambda(self, region: str | None, timeout: float) -> Any:
        if self._client is not None:
            return self._client
        with self._lock:
            if (region, timeout) not in self._clients:
                boto3 = require("boto3", "aws")
                config = require("botocore.config", "aws").Config(
                    read_timeout=timeout,
                    connect_timeout=min(timeout, _CONNECT_TIMEOUT),
                    retries={"total_max_attempts": 1},
                )
                self._clients[region, timeout] = boto3.client(
                    "lambda", region_name=region, config=config
                )
            return self._clients[region, timeout]

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
        """One synchronous invoke."""
        if spec.lambda_function is None:
            return Attempt(f"is not a Lambda hook ({spec.where})", final=True)
        function, _ = parse_lambda_function(spec.lambda_function, "lambda")
        region = function.split(":")[3] if function.startswith("arn:") else None
        event = json.dumps(self.payload(release, hook, attempt)).encode()
        try:
            errors = require("botocore.exceptions", "aws")
            client = self._lambda(region, spec.timeout)
        except MissingExtraError as exc:
            return Attempt(f"could not be run: {exc}", final=True)
        try:
            response = client.invoke(
                FunctionName=spec.lambda_function,
                InvocationType="RequestResponse",
                Payload=event,
            )
            raw = response["Payload"].read()
        except (errors.ReadTimeoutError, errors.ConnectTimeoutError):
            return Attempt(f"timed out ({spec.timeout:g}s)")
        except errors.ClientError as exc:
            error = exc.response.get("Error", {})
            said = f"{error.get('Code', 'Error')}: {error.get('Message', exc)}"
            return Attempt(f"could not be invoked ({_excerpt(said)})")
        except errors.BotoCoreError as exc:
            return Attempt(f"could not be invoked ({type(exc).__name__}: {_excerpt(exc)})")
        return verdict(response.get("FunctionError"), bytes(raw))
