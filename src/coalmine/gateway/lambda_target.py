"""`LambdaTarget`: the `FunctionTarget` of Lambda versions, calling the Lambda Invoke API.

A version's target is a qualified ARN (``arn:aws:lambda:REGION:ACCOUNT:function:NAME:QUALIFIER``)
or ``lambda:NAME:QUALIFIER`` (region and account from the AWS configuration
chain); it is invoked synchronously with that qualifier. The event is an API
Gateway HTTP API payload 2.0 event (`coalmine.gateway.event`),
whose headers hold the ``baggage`` with the gateway's signed routing context,
so the function's own SDK keeps the chain's channel; the answer maps back as
the Lambda proxy integration maps it (`reply_of`).

Credentials, region and endpoint come from botocore's standard chain
(environment, profile, role; ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_LAMBDA``).
Two ways to call, chosen by measurement (bench/lambda_client.py,
docs/gateway.md): ``"sigv4"`` (default) signs each request with `coalmine.gateway.sigv4`
(the signature botocore's `SigV4Auth` makes, without its generality) and sends
it over the gateway's own pooled HTTP/1.1 client
(`HttpTarget`); ``"botocore"`` runs ``client.invoke`` in a thread pool.
Neither retries: the gateway answers at once.

What a call answers:

=====================================  ======  ==================================
Lambda says                            status  counted as
=====================================  ======  ==================================
the function's result                  as it   an error when 5xx
``X-Amz-Function-Error`` (an error)    502     ``function_error``
``Sandbox.Timedout`` (its timeout)     504     ``timeout``
no answer within the gateway timeout   504     ``timeout``
429 TooManyRequestsException           429     ``throttled`` (with Retry-After)
any other service error, no endpoint   502     ``invoke_failed``
=====================================  ======  ==================================

The gateway counts each of these as an error of the version; `outcomes`
counts them apart, per (function, version, outcome).
"""

from __future__ import annotations

import asyncio
import binascii
import json
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from coalmine._extras import require
from coalmine.core.forwarding import LambdaRef, lambda_ref
from coalmine.core.ports import Call
from coalmine.gateway.asgi import CallFailed, Reply, Send, json_body, read_body
from coalmine.gateway.event import RequestIds, event_json, reply_of
from coalmine.gateway.sigv4 import sign_invoke
from coalmine.gateway.upstream import HttpTarget

__all__ = ["LambdaTarget"]

Client = Literal["sigv4", "botocore"]
MAX_PAYLOAD = 6 * 1024 * 1024
"""Lambda's limit on a synchronous request payload"""
_JSON = [(b"content-type", b"application/json")]
_READ_HEADERS = frozenset((b"retry-after", b"x-amzn-errortype", b"x-amz-function-error"))
"""the headers of Lambda's answer that `LambdaTarget._answer` reads"""


class LambdaTarget:
    """The `FunctionTarget` of Lambda versions (see the module's docstring)."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        pool_size: int = 100,
        max_body: int = MAX_PAYLOAD,
        client: Client = "sigv4",
        session: Any = None,
    ) -> None:
        if client not in ("sigv4", "botocore"):
            raise ValueError(f"client must be 'sigv4' or 'botocore', not {client!r}")
        self.timeout = timeout
        self.max_body = max_body
        self.client = client
        self.pool_size = pool_size
        self._session = session
        self._http = HttpTarget(
            pool_size=pool_size, timeout=timeout, connect_timeout=connect_timeout
        )
        self._clients: dict[str | None, Any] = {}
        self._credentials: Any = None
        self._refs: dict[str, LambdaRef] = {}
        self._requests: dict[tuple[str, LambdaRef], _InvokeRequest] = {}
        self._ids = RequestIds()
        self._pool: ThreadPoolExecutor | None = None
        self.outcomes: Counter[tuple[str, str, str]] = Counter()
        """(function, version, outcome) -> calls, for outcomes other than an answer"""

    async def start(self) -> None:
        await self._http.start()

    async def close(self) -> None:
        await self._http.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- the AWS configuration chain ---------------------------------------------------

    def _botocore_client(self, region: str | None) -> Any:
        client = self._clients.get(region)
        if client is None:
            if self._session is None:
                self._session = require("botocore.session", "aws").get_session()
            config = require("botocore.config", "aws").Config(
                retries={"total_max_attempts": 1},
                read_timeout=self.timeout,
                connect_timeout=self.timeout,
                max_pool_connections=self.pool_size,
            )
            client = self._session.create_client("lambda", region_name=region, config=config)
            self._credentials = self._session.get_credentials()
            self._clients[region] = client
        return client

    async def _client_for(self, region: str | None) -> Any:
        client = self._clients.get(region)
        if client is None:  # making one reads files and may ask a role: off the event loop
            try:
                client = await asyncio.get_running_loop().run_in_executor(
                    None, self._botocore_client, region
                )
            except ImportError as exc:  # MissingExtraError names the extra
                raise CallFailed(501, str(exc)) from None
            except Exception as exc:  # no region, a broken profile: say what botocore said
                raise CallFailed(502, f"cannot make a Lambda client: {exc}") from None
        return client

    def _ref(self, call: Call) -> LambdaRef:
        ref = self._refs.get(call.target)
        if ref is None:
            try:
                ref = lambda_ref(call.target)
                if ref is None:
                    raise ValueError(f"{call.target!r} is not a Lambda target")
            except ValueError as exc:
                raise CallFailed(
                    502, f"{call.function} {call.version} has an unusable target: {exc}"
                ) from None
            if len(self._refs) > 4096:  # targets come from snapshots; old ones go
                self._refs.clear()
            self._refs[call.target] = ref
        return ref

    # -- a call --------------------------------------------------------------------------

    async def invoke(self, call: Call, send: Send) -> int:
        """Invoke the version of ``call`` with its event; send the mapped answer; its status."""
        ref = self._ref(call)
        body = await read_body(call, self.max_body, "Lambda's payload limit")
        request_id = self._ids.next()
        payload = event_json(
            call, body, request_id=request_id, now=time.time(), source_ip=call.source_ip
        )
        client = await self._client_for(ref.region)
        what = f"Lambda {call.function} {call.version} ({ref.function_name}:{ref.qualifier})"
        try:
            if self.client == "sigv4":
                status, headers, data = await self._sigv4(client, ref, payload, what)
            else:
                status, headers, data = await self._botocore(client, ref, payload, what)
            reply = self._answer(call, what, status, headers, data)
        except CallFailed as exc:
            self.outcomes[(call.function, call.version, _outcome(exc))] += 1
            exc.request_id = request_id
            raise
        if reply.status == 429:
            self.outcomes[(call.function, call.version, "throttled")] += 1
        await send(reply.start(call.response_headers))
        await send({"type": "http.response.body", "body": reply.body})
        return reply.status

    def _answer(
        self, call: Call, what: str, status: int, headers: Mapping[str, str], data: bytes
    ) -> Reply:
        """The reply to the client for Lambda's answer; `CallFailed` for an error."""
        if status == 429:
            retry = headers.get("retry-after", "1")
            detail = f"{what} is throttled: {_message(data) or 'Rate Exceeded.'}"
            return Reply(
                429,
                [*_JSON, (b"retry-after", retry.encode("latin-1"))],
                json_body({"detail": detail, "function": call.function, "version": call.version}),
            )
        if status >= 300:
            kind = headers.get("x-amzn-errortype", "").split(":", 1)[0] or f"HTTP {status}"
            raise CallFailed(
                502,
                f"{what} could not be invoked: {kind}: {_message(data) or 'no message'}",
                function=call.function,
                version=call.version,
            )
        if "x-amz-function-error" in headers:
            try:
                error = json.loads(data)
            except ValueError:
                error = {}
            if not isinstance(error, dict):
                error = {}
            kind = str(error.get("errorType", headers["x-amz-function-error"]))
            message = str(error.get("errorMessage", ""))
            if kind == "Sandbox.Timedout" or "Task timed out" in message:
                raise CallFailed(
                    504,
                    f"{what} timed out: {message}",
                    function=call.function,
                    version=call.version,
                    error={"type": kind, "message": message},
                )
            raise CallFailed(
                502,
                f"{what} failed: {kind}: {message}",
                function=call.function,
                version=call.version,
                error={"type": kind, "message": message},
            )
        try:
            return reply_of(json.loads(data) if data else None)
        except (TypeError, ValueError, binascii.Error) as exc:
            raise CallFailed(
                502,
                f"{what} returned a value that is not a response: {exc}",
                function=call.function,
                version=call.version,
            ) from None

    async def _sigv4(
        self, client: Any, ref: LambdaRef, payload: bytes, what: str
    ) -> tuple[int, dict[str, str], bytes]:
        """Sign the Invoke request with the chain's credentials; send it over our own pool."""
        endpoint = client.meta.endpoint_url
        request = self._requests.get((endpoint, ref))
        if request is None:
            request = _InvokeRequest.of(endpoint, ref)
            if len(self._requests) > 4096:  # refs come from snapshots; old ones go
                self._requests.clear()
            self._requests[(endpoint, ref)] = request
        signed = _sign(self._credentials, client, request, payload)
        try:
            status, raw, data = await self._http.post(request.url, signed, payload)
        except CallFailed as exc:
            if exc.status == 504:
                raise CallFailed(504, f"{what} gave no answer within {self.timeout:g}s") from None
            raise CallFailed(
                502, f"{what} could not be invoked at {request.endpoint}: {exc.detail}"
            ) from None
        return (
            status,
            {k.decode("latin-1"): v.decode("latin-1") for k, v in raw if k in _READ_HEADERS},
            data,
        )

    async def _botocore(
        self, client: Any, ref: LambdaRef, payload: bytes, what: str
    ) -> tuple[int, dict[str, str], bytes]:
        """``client.invoke`` in a thread pool; its answer as status, headers, payload."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.pool_size, thread_name_prefix="coalmine-lambda")
        exceptions = require("botocore.exceptions", "aws")

        def invoke() -> tuple[int, dict[str, str], bytes]:
            try:
                out = client.invoke(
                    FunctionName=ref.function_name, Qualifier=ref.qualifier, Payload=payload
                )
            except exceptions.ClientError as exc:
                meta = exc.response.get("ResponseMetadata", {})
                headers = {k.lower(): v for k, v in meta.get("HTTPHeaders", {}).items()}
                headers.setdefault("x-amzn-errortype", exc.response["Error"].get("Code", ""))
                message = exc.response["Error"].get("Message", "")
                return (
                    int(meta.get("HTTPStatusCode", 502)),
                    headers,
                    json_body({"message": message}),
                )
            headers = {
                k.lower(): v for k, v in out["ResponseMetadata"].get("HTTPHeaders", {}).items()
            }
            return int(out["StatusCode"]), headers, out["Payload"].read()

        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, invoke), self.timeout)
        except (TimeoutError, exceptions.ReadTimeoutError):
            raise CallFailed(504, f"{what} gave no answer within {self.timeout:g}s") from None
        except exceptions.BotoCoreError as exc:
            raise CallFailed(502, f"{what} could not be invoked: {exc}") from None


@dataclass(frozen=True, slots=True)
class _InvokeRequest:
    """Where the Invoke request of one Lambda version goes, worked out once."""

    endpoint: str
    url: str
    host: str
    path: str
    """as sent: the function's name percent-encoded"""
    query: str

    @classmethod
    def of(cls, endpoint: str, ref: LambdaRef) -> _InvokeRequest:
        endpoint = endpoint.rstrip("/")
        path = f"/2015-03-31/functions/{quote(ref.function_name, safe='-_.~')}/invocations"
        query = f"Qualifier={quote(ref.qualifier, safe='-_.~')}"
        url = f"{endpoint}{path}?{query}"
        return cls(endpoint, url, urlsplit(url).netloc, path, query)


def _sign(
    credentials: Any, client: Any, request: _InvokeRequest, payload: bytes
) -> list[tuple[bytes, bytes]]:
    """The headers of the SigV4-signed Invoke POST ``request`` (`coalmine.gateway.sigv4`).

    ``credentials`` are the chain's (refreshable: frozen anew for each request).
    """
    if credentials is None:
        raise CallFailed(
            502, "no AWS credentials found (environment, profile or role) to invoke Lambda with"
        )
    frozen = credentials.get_frozen_credentials()
    return sign_invoke(
        host=request.host,
        path=request.path,
        query=request.query,
        payload=payload,
        access_key=frozen.access_key,
        secret_key=frozen.secret_key,
        token=frozen.token,
        region=client.meta.region_name,
    )


def _message(data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return data[:200].decode("utf-8", "replace")
    if not isinstance(body, dict):
        return ""
    return str(body.get("message") or body.get("Message") or "")


def _outcome(exc: CallFailed) -> str:
    if exc.status == 504:
        return "timeout"
    return "function_error" if "error" in exc.extra else "invoke_failed"
