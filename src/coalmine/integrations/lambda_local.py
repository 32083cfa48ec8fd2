"""`LocalLambda`: a local endpoint speaking the Lambda Invoke REST API, running Python handlers.

``POST /2015-03-31/functions/{FunctionName}/invocations?Qualifier=Q`` resolves
the function (a name, a partial or a full ARN, each possibly ending in
``:qualifier``) and the qualifier (a version, an alias, ``$LATEST``, or none =
``$LATEST``) to a ``pkg.mod:handler``, loads it once per version in its own
module namespace (`HandlerLoader`) and calls ``handler(event, context)`` in a
thread. It answers as Lambda does, so boto3 pointed at it through
``AWS_ENDPOINT_URL_LAMBDA`` (as at ``sam local start-lambda``) behaves as
against AWS: a function error is a 200 with ``X-Amz-Function-Error``, a
timeout is ``Sandbox.Timedout``, a concurrency limit is a 429
TooManyRequestsException, an unknown function a 404 ResourceNotFoundException.
No Docker: handlers share this process (and its ``sys.path``).

Functions come from a YAML file (`load_functions`) in either format::

    functions:                       # this module's own format
      NAME:
        versions: {"1": pkg.mod:handler, "2": pkg.mod2:handler}
        aliases: {live: "1"}
        timeout: 3                   # seconds (Lambda's default)
        concurrency: 10              # reserved concurrency (default: no limit)

or a ``coalmine.yaml`` (an app spec): each coalmine version name is a
qualifier and ``current`` is the alias ``live``. ``$LATEST`` is the version
named ``$LATEST`` if there is one, else the last version listed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs

from coalmine._extras import require
from coalmine.core.errors import InvalidInput
from coalmine.core.model import Target, TargetKind
from coalmine.integrations.handlers import HandlerLoader

__all__ = [
    "DEFAULT_PORT",
    "ClientContext",
    "LambdaContext",
    "LambdaFunction",
    "LocalLambda",
    "load_functions",
    "parse_functions",
    "serve_in_thread",
]

DEFAULT_PORT = 3001
"""the port of ``sam local start-lambda``"""
LATEST = "$LATEST"
LIVE_ALIAS = "live"
"""the alias a coalmine.yaml's ``current`` version gets"""
MAX_PAYLOAD = 6 * 1024 * 1024
"""Lambda's limit on a synchronous request payload"""
DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"

_NAME = r"[A-Za-z0-9_-]{1,64}"
_QUALIFIER = r"\$LATEST|[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_FUNCTION_NAME = re.compile(
    rf"(?:arn:(?P<partition>aws[a-z-]*):lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{{12}}):function:"
    rf"|(?P<account2>\d{{12}}):function:)?(?P<name>{_NAME})(?::(?P<qualifier>{_QUALIFIER}))?"
)
_NAME_RE = re.compile(_NAME)
_QUALIFIER_RE = re.compile(_QUALIFIER)
_PATH = re.compile(r"/2015-03-31/functions/(?P<fn>[^/]+)/invocations/?")
_REGION_IN_AUTH = re.compile(rb"Credential=[^/]+/\d{8}/(?P<region>[a-z0-9-]+)/lambda/")
_FUNCTION_KEYS = {"versions", "aliases", "timeout", "concurrency", "memory"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class LambdaFunction:
    """One function of the local endpoint: its versions' handlers, aliases and limits."""

    name: str
    versions: Mapping[str, str]
    """qualifier -> ``pkg.mod:handler``"""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """alias -> qualifier"""
    timeout: float = 3.0
    concurrency: int | None = None
    memory: int = 128

    def __post_init__(self) -> None:
        where = f"function {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise InvalidInput(
                f"invalid function name {self.name!r}: use 1-64 letters, digits, '-' or '_'"
            )
        if not isinstance(self.versions, Mapping) or not self.versions:
            raise InvalidInput(f"{where} needs versions: a mapping of qualifier to pkg.mod:handler")
        versions: dict[str, str] = {}
        for qualifier, ref in self.versions.items():
            qualifier = str(qualifier)
            if not _QUALIFIER_RE.fullmatch(qualifier):
                raise InvalidInput(f"{where}: invalid version {qualifier!r}")
            if not isinstance(ref, str) or Target.parse(ref).kind is not TargetKind.LOCAL:
                raise InvalidInput(
                    f"{where} version {qualifier}: {ref!r} is not a local handler pkg.mod:handler"
                )
            versions[qualifier] = ref
        aliases: dict[str, str] = {}
        for alias, qualifier in (self.aliases or {}).items():
            alias, qualifier = str(alias), str(qualifier)
            if not _QUALIFIER_RE.fullmatch(alias) or alias == LATEST:
                raise InvalidInput(f"{where}: invalid alias {alias!r}")
            if alias in versions:
                raise InvalidInput(f"{where}: alias {alias!r} is also a version")
            if qualifier not in versions:
                raise InvalidInput(
                    f"{where}: alias {alias!r} points to {qualifier!r}, which is not a version"
                )
            aliases[alias] = qualifier
        timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise InvalidInput(f"{where}: timeout must be a number of seconds")
        if not 0 < timeout <= 900:
            raise InvalidInput(f"{where}: timeout must be more than 0 and at most 900 seconds")
        c = self.concurrency
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise InvalidInput(f"{where}: concurrency must be a whole number of at least 1")
        m = self.memory
        if isinstance(m, bool) or not isinstance(m, int) or not 128 <= m <= 10240:
            raise InvalidInput(f"{where}: memory must be a whole number of MB from 128 to 10240")
        object.__setattr__(self, "versions", MappingProxyType(versions))
        object.__setattr__(self, "aliases", MappingProxyType(aliases))
        object.__setattr__(self, "timeout", float(timeout))

    def resolve(self, qualifier: str | None) -> str | None:
        """The version a qualifier names, or None when it names none."""
        if qualifier is None or qualifier == LATEST:
            return LATEST
        if qualifier in self.versions:
            return qualifier
        return self.aliases.get(qualifier)

    def handler_ref(self, version: str) -> str:
        if version == LATEST and LATEST not in self.versions:
            return self.versions[next(reversed(list(self.versions)))]
        return self.versions[version]


def parse_functions(doc: object) -> dict[str, LambdaFunction]:
    """The functions of a parsed config document (either format); InvalidInput when bad."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("functions"), Mapping):
        raise InvalidInput("the file needs a 'functions' mapping of function name to its versions")
    functions: dict[str, LambdaFunction] = {}
    app_spec = "app" in doc
    for name, spec in doc["functions"].items():
        if not isinstance(spec, Mapping):
            raise InvalidInput(f"function {name!r} must be a mapping with 'versions'")
        if app_spec:  # a coalmine.yaml: version names are qualifiers, current is 'live'
            current = spec.get("current")
            aliases = {LIVE_ALIAS: str(current)} if current is not None else {}
            functions[str(name)] = LambdaFunction(
                str(name), dict(spec.get("versions") or {}), aliases
            )
            continue
        unknown = sorted(set(map(str, spec)) - _FUNCTION_KEYS)
        if unknown:
            raise InvalidInput(
                f"function {name!r}: unknown key(s) {', '.join(unknown)};"
                f" use {', '.join(sorted(_FUNCTION_KEYS))}"
            )
        functions[str(name)] = LambdaFunction(
            str(name),
            spec.get("versions") or {},
            spec.get("aliases") or {},
            timeout=spec.get("timeout", 3.0),
            concurrency=spec.get("concurrency"),
            memory=spec.get("memory", 128),
        )
    if not functions:
        raise InvalidInput("the file names no functions")
    return functions


def load_functions(path: str | Path) -> dict[str, LambdaFunction]:
    """The functions of a YAML file (this module's format or a coalmine.yaml)."""
    yaml = require("yaml", "aws")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise InvalidInput(f"{path} is not valid YAML: {first}") from None
    try:
        return parse_functions(doc)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}") from None


@dataclass(frozen=True)
class ClientContext:
    """The decoded ``X-Amz-Client-Context`` (``ClientContext`` of boto3's invoke)."""

    client: Any = None
    custom: Any = None
    env: Any = None


@dataclass
class LambdaContext:
    """The context object a Python handler gets, with the attributes Lambda's runtime sets."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    aws_request_id: str
    memory_limit_in_mb: int
    deadline: float = field(repr=False)
    """time.monotonic() at which the invocation times out"""
    client_context: ClientContext | None = None
    identity: Any = None
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class _Error(Exception):
    """An error Lambda answers as a service error (not a function error)."""

    def __init__(self, status: int, kind: str, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.extra = status, kind, message, extra


class LocalLambda:
    """The ASGI app of the local Invoke endpoint (see the module's docstring)."""

    def __init__(
        self,
        functions: Mapping[str, LambdaFunction],
        *,
        account: str = DEFAULT_ACCOUNT,
        region: str = DEFAULT_REGION,
        workers: int = 64,
    ) -> None:
        self.functions = dict(functions)
        self.account = account
        self.region = region
        self._loader = HandlerLoader("coalmine_lambda")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coalmine-lambda")
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()
        self._background: set[asyncio.Task[object]] = set()
        self.invocations = 0
        """synchronous and Event invocations accepted so far (for tests)"""

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> LocalLambda:
        return cls(load_functions(path), **options)

    def close(self) -> None:
        """Stop the handler threads and unload the handler modules."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loader.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = str(uuid.uuid4())
        try:
            status, headers, body = await self._handle(scope, receive, request_id)
        except _Error as exc:
            status = exc.status
            headers = [(b"x-amzn-errortype", exc.kind.encode())]
            data: dict[str, str] = {"Type": "User", "message": exc.message, **exc.extra}
            body = json.dumps(data).encode()
            if exc.status == 429:
                headers.append((b"retry-after", b"1"))
        headers += [
            (b"x-amzn-requestid", request_id.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(
        self, scope: Scope, receive: Receive, request_id: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        match = _PATH.fullmatch(scope["path"])
        if match is None or scope["method"] != "POST":
            raise _Error(
                404,
                "UnknownOperationException",
                f"{scope['method']} {scope['path']}: this endpoint speaks only Invoke,"
                " POST /2015-03-31/functions/{FunctionName}/invocations",
            )
        headers = {k.lower(): v for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        fn, qualifier, arn_region, arn_account = self._function_of(
            match["fn"], (query.get("Qualifier") or [None])[0]
        )
        region = arn_region or self._region_of(headers)
        account = arn_account or self.account
        arn = f"arn:aws:lambda:{region}:{account}:function:{fn.name}"
        version = fn.resolve(qualifier)
        if version is None:
            raise _Error(404, "ResourceNotFoundException", f"Function not found: {arn}:{qualifier}")
        invoked_arn = f"{arn}:{qualifier}" if qualifier is not None else arn
        kind = headers.get(b"x-amz-invocation-type", b"RequestResponse").decode("latin-1")
        if kind not in ("RequestResponse", "Event", "DryRun"):
            raise _Error(
                400,
                "InvalidParameterValueException",
                f"invalid InvocationType {kind!r}: use RequestResponse, Event or DryRun",
            )
        payload = await _read(receive)
        try:
            event = json.loads(payload) if payload.strip() else {}
        except ValueError as exc:
            raise _Error(
                400,
                "InvalidRequestContentException",
                f"Could not parse request body into json: {exc}",
            ) from None
        client_context = _client_context(headers.get(b"x-amz-client-context"))
        executed = [(b"x-amz-executed-version", version.encode())]
        if kind == "DryRun":
            return 204, executed, b""
        context = LambdaContext(
            function_name=fn.name,
            function_version=version,
            invoked_function_arn=invoked_arn,
            aws_request_id=request_id,
            memory_limit_in_mb=fn.memory,
            deadline=time.monotonic() + fn.timeout,
            client_context=client_context,
            log_group_name=f"/aws/lambda/{fn.name}",
            log_stream_name=f"local/[{version}]{request_id}",
        )
        if kind == "Event":  # Lambda queues it: no concurrency error for the caller
            self.invocations += 1
            task = asyncio.create_task(self._run(fn, version, event, context))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return 202, [], b""
        with self._slot(fn):
            self.invocations += 1
            error, result = await self._run(fn, version, event, context)
        if error:
            return 200, [*executed, (b"x-amz-function-error", b"Unhandled")], result
        return 200, executed, result

    def _function_of(
        self, raw: str, qualifier: str | None
    ) -> tuple[LambdaFunction, str | None, str | None, str | None]:
        match = _FUNCTION_NAME.fullmatch(raw)
        if match is None:
            raise _Error(
                400,
                "ValidationException",
                f"1 validation error detected: Value '{raw}' at 'functionName' failed to"
                " satisfy constraint: give a function name, a partial ARN or an ARN",
            )
        if qualifier is not None and not _QUALIFIER_RE.fullmatch(qualifier):
            raise _Error(400, "ValidationException", f"invalid Qualifier {qualifier!r}")
        named = match["qualifier"]
        if named is not None and qualifier is not None and named != qualifier:
            raise _Error(
                400,
                "InvalidParameterValueException",
                "The derived qualifier from the function name does not match the specified"
                " qualifier.",
            )
        account = match["account"] or match["account2"]
        fn = self.functions.get(match["name"])
        if fn is None:
            region = match["region"] or self.region
            raise _Error(
                404,
                "ResourceNotFoundException",
                f"Function not found: arn:aws:lambda:{region}:{account or self.account}"
                f":function:{match['name']}",
            )
        return fn, named or qualifier, match["region"], account

    def _region_of(self, headers: Mapping[bytes, bytes]) -> str:
        found = _REGION_IN_AUTH.search(headers.get(b"authorization", b""))
        return found["region"].decode() if found else self.region

    @contextlib.contextmanager
    def _slot(self, fn: LambdaFunction) -> Iterator[None]:
        with self._lock:
            running = self._running.get(fn.name, 0)
            if fn.concurrency is not None and running >= fn.concurrency:
                raise _Error(
                    429,
                    "TooManyRequestsException",
                    "Rate Exceeded.",
                    Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
                )
            self._running[fn.name] = running + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[fn.name] -= 1

    async def _run(
        self, fn: LambdaFunction, version: str, event: object, context: LambdaContext
    ) -> tuple[bool, bytes]:
        """(function error?, payload) of one invocation."""

        def call() -> tuple[bool, bytes]:
            try:
                handler = self._loader.load(fn.name, version, fn.handler_ref(version))
                result = handler(event, context)  # type: ignore[arg-type]
            except Exception as exc:
                return True, _error_payload(exc, context.aws_request_id)
            try:
                return False, json.dumps(result).encode()
            except (TypeError, ValueError) as exc:
                return True, json.dumps(
                    {
                        "errorMessage": f"Unable to marshal response: {exc}",
                        "errorType": "Runtime.MarshalError",
                        "requestId": context.aws_request_id,
                        "stackTrace": [],
                    }
                ).encode()

        future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        try:
            return await asyncio.wait_for(future, fn.timeout)
        except TimeoutError:
            # Lambda would stop the sandbox; a thread cannot be stopped, so it
            # runs on unobserved and its result is dropped.
            return True, json.dumps(
                {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"RequestId: {context.aws_request_id} Error: Task timed out"
                    f" after {fn.timeout:.2f} seconds",
                }
            ).encode()


def _error_payload(exc: BaseException, request_id: str) -> bytes:
    stack = traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:])
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "requestId": request_id,
            "stackTrace": stack,
        }
    ).encode()


def _client_context(raw: bytes | None) -> ClientContext | None:
    if raw is None:
        return None
    try:
        data = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        raise _Error(
            400,
            "InvalidRequestContentException",
            "Client context must be a valid Base64-encoded JSON object.",
        ) from None
    if not isinstance(data, dict):
        raise _Error(400, "InvalidRequestContentException", "Client context must be a JSON object.")
    return ClientContext(data.get("client"), data.get("custom"), data.get("env"))


async def _read(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Error(400, "InvalidRequestContentException", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_PAYLOAD:
            raise _Error(
                413,
                "RequestTooLargeException",
                f"Request must be smaller than {MAX_PAYLOAD} bytes for the InvokeFunction"
                " operation",
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@contextlib.contextmanager
def serve_in_thread(
    app: LocalLambda,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    start_timeout: float = 15,
    http: str = "auto",
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread; yield its endpoint URL.

    For tests and benches: ``with serve_in_thread(LocalLambda(fns)) as url:``
    then point boto3 at ``url`` (``AWS_ENDPOINT_URL_LAMBDA``). ``http`` is
    uvicorn's protocol: the gateway's (`coalmine.gateway.server.PROTOCOL`)
    writes an answer's head and body at once, where uvicorn's own takes about
    40 ms an invoke (Nagle's algorithm meeting the client's delayed ACK).
    """
    uvicorn = require("uvicorn", "gateway")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", http=http)
    server = uvicorn.Server(config)
    ready = threading.Event()

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.005)
        ready.set()
        await task

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(start_timeout) or not server.started:
        raise RuntimeError("the local Lambda endpoint did not start")
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
