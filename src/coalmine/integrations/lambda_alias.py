"""`Boto3LambdaAliases`: the boto3 implementation of `coalmine.core.ports.LambdaAliases`.

GetAlias and UpdateAlias over a boto3 Lambda client (the ``aws`` extra,
imported on first use). The client comes from the standard AWS configuration
chain (credentials, profile, role, ``AWS_ENDPOINT_URL_LAMBDA``); the region
is the one a function's ARN names, else the chain's. Each call is bounded by
a connect and a read timeout and is made once (botocore's retries are off):
the controller retries, within its own time budget, so that a tick never
waits on botocore's backoff.
"""

from __future__ import annotations

import threading
from typing import Any

from coalmine._extras import require
from coalmine.core.alias import AliasCallFailed, AliasRouting

__all__ = ["Boto3LambdaAliases"]


def _region(function: str) -> str | None:
    """The region an unqualified function ARN names; None for a bare name."""
    parts = function.split(":")
    return parts[3] if function.startswith("arn:") and len(parts) >= 7 else None


def _routing(answer: dict[str, Any]) -> AliasRouting:
    weights = (answer.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return AliasRouting(
        str(answer["FunctionVersion"]), {str(v): float(w) for v, w in weights.items()}
    )


class Boto3LambdaAliases:
    """Reads and moves Lambda aliases with boto3; one client per region, made on first use.

    ``connect_timeout`` and ``read_timeout`` (seconds) bound each call.
    ``session`` is a ``boto3.session.Session`` to make the clients from
    (default: a new one over the standard chain).
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        session: Any = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session = session
        self._clients: dict[str | None, Any] = {}
        self._lock = threading.Lock()

    def _client(self, function: str) -> Any:
        region = _region(function)
        with self._lock:  # a boto3 session is not thread-safe; its clients are
            client = self._clients.get(region)
            if client is None:
                try:
                    if self._session is None:
                        self._session = require("boto3", "aws").session.Session()
                    config = require("botocore.config", "aws").Config(
                        connect_timeout=self.connect_timeout,
                        read_timeout=self.read_timeout,
                        retries={"total_max_attempts": 1},
                    )
                    client = self._session.client("lambda", region_name=region, config=config)
                except Exception as exc:  # no region, a broken profile, no boto3: say so
                    raise AliasCallFailed(f"cannot make a Lambda client: {exc}") from exc
                self._clients[region] = client
            return client

    def _call(self, operation: str, function: str, alias: str, **params: Any) -> AliasRouting:
        client = self._client(function)
        try:
            answer = getattr(client, operation)(FunctionName=function, Name=alias, **params)
        except Exception as exc:
            raise AliasCallFailed(_describe(exc)) from exc
        return _routing(answer)

    def get(self, function: str, alias: str) -> AliasRouting:
        return self._call("get_alias", function, alias)

    def update(self, function: str, alias: str, routing: AliasRouting) -> AliasRouting:
        return self._call(
            "update_alias",
            function,
            alias,
            FunctionVersion=routing.version,
            RoutingConfig={"AdditionalVersionWeights": dict(routing.weights)},
        )

    def close(self) -> None:
        """Close the clients made so far (their connection pools)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


def _describe(exc: Exception) -> str:
    """AWS's error code and message (a ClientError), else the exception's own words."""
    error = getattr(exc, "response", None)
    if isinstance(error, dict) and isinstance(error.get("Error"), dict):
        code = error["Error"].get("Code") or type(exc).__name__
        message = error["Error"].get("Message") or str(exc)
        return f"{code}: {message}"
    return f"{type(exc).__name__}: {exc}"
