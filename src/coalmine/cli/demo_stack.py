"""What `coalmine demo` runs in one process, and takes down again: the whole product on loopback.

`Stack` starts the control plane (its store a temporary SQLite file unless a
database URL is given) with the rollout controller, the example app's
functions (behind the gateway's local runtime, or behind the local Lambda
Invoke endpoint with ``lambda_mode``), the gateway, a stream (in memory, or
NATS JetStream), ``notify-user``'s consumer (an SDK `Client` that follows the
routing, dispatches each record to its chain's version and sends the
per-version metrics), and a crowd of simulated users placing orders (both in
`coalmine.cli.demo_traffic`). Everything is in threads of this process;
`close` stops them in the reverse order and removes the temporary directory,
also after a failure half way through `start`.
"""

from __future__ import annotations

import importlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from coalmine.cli import aws_lambda, serve
from coalmine.cli import gateway as gateway_command
from coalmine.cli.demo_traffic import CONSUMER, TOPIC, USER_HEADER, Consumer, Crowd, Ledger
from coalmine.core.errors import CoalmineError, InvalidInput
from coalmine.core.signing import Keyring

__all__ = ["APP", "Options", "Stack", "find_app_dir"]

APP = "food-ordering"
EXAMPLE = Path("examples") / "food_ordering" / "coalmine.yaml"
WIRING = "examples.food_ordering.app"


def find_app_dir(given: str | None) -> Path:
    """The directory that holds ``examples/food_ordering``: ``given``, else the working
    directory, else the source tree this package was installed from (editable)."""
    candidates = (
        [Path(given)]
        if given
        else [Path.cwd(), Path(__file__).resolve().parents[3]]  # src/coalmine/cli -> root
    )
    for d in candidates:
        if (d / EXAMPLE).is_file():
            return d.resolve()
    where = given or "the working directory"
    raise InvalidInput(
        f"{EXAMPLE} is not in {where}: run coalmine demo from the repository's root"
        " or pass --app-dir with the directory that holds examples/"
    )


# servers in threads ----------------------------------------------------------------------


def _bound(port: int) -> socket.socket:
    """A socket on 127.0.0.1:``port``, the server's default, so the URLs the demo prints are
    the docs' ones; any free port when another process has it (a second demo, a server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.bind(("127.0.0.1", 0))
    return sock


def _serve(app: Any, *, http: str = "auto", port: int = 0) -> Iterator[str]:
    import uvicorn

    sock = _bound(port)
    config = uvicorn.Config(
        app,
        log_level="error",
        lifespan="on",
        ws="none",
        http=http,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="demo-uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:  # uvicorn has a flag, not an event
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("a demo server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _revoke(tokens: Any, ids: list[int]) -> None:
    """Revoke the demo's tokens; the store's last admin token stays (the store refuses)."""
    for token_id in ids:
        with suppress(CoalmineError):
            tokens.revoke(token_id)


def _served(app: Any, **kw: Any) -> AbstractContextManager[str]:
    return contextmanager(_serve)(app, **kw)


@dataclass
class Options:
    users: int = 300
    threads: int = 16
    rate: float = 120.0
    seed: int = 1
    lambda_mode: bool = False
    database_url: str | None = None
    nats_url: str | None = None
    app_dir: str | None = None


class Stack:
    """The demo's running system; see the module. Use as a context manager."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.app = APP
        self.ledger = Ledger()
        self.tmp: str | None = None
        self.plane_url = self.gateway_url = self.lambda_url = ""
        self.admin_token = ""
        self.database_shown = ""
        self.stream_shown = ""
        self.service: Any = None
        self.crowd: Crowd | None = None
        self._exit = ExitStack()
        self._env: dict[str, str | None] = {}

    # --- set-up ---------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setenv(self, name: str, value: str) -> None:
        self._env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def start(self) -> None:
        from coalmine.controller.hooks import HookDispatcher
        from coalmine.controller.leader import SoleLeadership
        from coalmine.controller.loop import Controller
        from coalmine.controller.schemas import AppSpec
        from coalmine.web.app import create_app

        o = self.options
        root = find_app_dir(o.app_dir)
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
            self._exit.callback(_forget_path, str(root))
        spec: dict[str, Any] = yaml.safe_load((root / EXAMPLE).read_text())
        self.tmp = tempfile.mkdtemp(prefix="coalmine-demo-")
        if o.database_url:
            # a shared database: a name of its own, so runs never meet each other's releases
            self.app = f"{APP}-{secrets.token_hex(3)}"
            url = o.database_url
        else:
            url = f"sqlite:///{Path(self.tmp) / 'coalmine.db'}"
        from sqlalchemy.engine import make_url

        self.database_shown = make_url(url).render_as_string(hide_password=True)
        spec["app"] = self.app
        keyring = Keyring.single(secrets.token_urlsafe(32), "demo")
        handlers = {fn: dict(body["versions"]) for fn, body in spec["functions"].items()}

        if o.lambda_mode:
            self._start_lambda(handlers, spec)

        web = create_app(database_url=url, signing_keys=keyring, heartbeat=5.0)
        self.service = web.state.plane
        tokens = web.state.tokens
        admin = tokens.create(f"demo-admin-{secrets.token_hex(3)}", "admin")
        self.admin_token = admin.token
        self.plane_url = self._exit.enter_context(_served(web, port=serve.DEFAULT_PORT))
        self.service.catalog.apply(AppSpec.model_validate(spec), "demo")
        sdk = tokens.create(f"demo-{self.app}-{secrets.token_hex(3)}", "sdk", self.app)
        sdk_key = sdk.token
        if o.database_url:
            # a store that outlives the demo keeps its app's history, not a working admin token
            self._exit.callback(_revoke, tokens, [sdk.id, admin.id])

        controller = Controller(
            self.service,
            feed=web.state.feed,
            leadership=SoleLeadership(),  # the demo's own controller; its app is its own
            hooks=self._exit.enter_context(closing(HookDispatcher())),
            interval=0.2,
        )
        controller.start()
        self._exit.callback(controller.stop)

        stream = self._stream()
        self.gateway_url = self._start_gateway(keyring, sdk_key)

        wiring = importlib.import_module(WIRING)
        wiring.configure(stream, self.gateway_url)
        self._exit.callback(wiring.configure, None, None)

        from coalmine.sdk.client import Client

        client = Client(
            self.plane_url,
            sdk_key,
            apps=[self.app],
            signing_keys=keyring,
            flush_interval=0.5,
            cache_dir=self.tmp,
            wait=10,
        )
        self._exit.callback(client.close)
        consumer_handlers = {v: _load_handler(ref) for v, ref in handlers[CONSUMER].items()}
        consumer = Consumer(stream, client, consumer_handlers, self.ledger, self.app).start()
        self._exit.callback(consumer.stop)
        self.crowd = Crowd(
            self.gateway_url, self.ledger, o.users, o.threads, o.seed, o.rate
        ).start()
        self._exit.callback(self.crowd.stop)

    def _start_lambda(self, handlers: dict[str, dict[str, str]], spec: dict[str, Any]) -> None:
        from coalmine.gateway.server import PROTOCOL
        from coalmine.integrations.lambda_local import LambdaFunction, LocalLambda

        functions = {
            fn: LambdaFunction(fn, versions, timeout=10.0) for fn, versions in handlers.items()
        }
        local = LocalLambda(functions)
        self._exit.callback(local.close)
        # served as the gateway is (head and body of an answer in one write)
        self.lambda_url = self._exit.enter_context(
            _served(local, http=PROTOCOL, port=aws_lambda.DEFAULT_PORT)
        )
        self._setenv("AWS_ENDPOINT_URL_LAMBDA", self.lambda_url)
        self._setenv("AWS_ACCESS_KEY_ID", "demo")
        self._setenv("AWS_SECRET_ACCESS_KEY", "demo")
        self._setenv("AWS_DEFAULT_REGION", local.region)
        self._setenv("AWS_REGION", local.region)
        for fn, body in spec["functions"].items():
            body["versions"] = {v: f"lambda:{fn}:{v}" for v in body["versions"]}

    def _stream(self) -> Any:
        o = self.options
        if o.nats_url:
            from coalmine.integrations.nats import NatsJetStream

            nats = NatsJetStream(
                o.nats_url, prefix=f"demo{secrets.token_hex(4)}", ack_wait=1.0, storage="memory"
            )

            def drop() -> None:
                try:
                    nats.delete_topic(TOPIC)
                finally:
                    nats.close()

            self._exit.callback(drop)
            self.stream_shown = f"NATS JetStream {o.nats_url}"
            return nats
        from coalmine.integrations.memory import MemoryStream

        self.stream_shown = "in memory"
        return MemoryStream(partitions=4, ack_wait=1.0)

    def _start_gateway(self, keyring: Keyring, sdk_key: str) -> str:
        from coalmine.gateway import GatewayConfig, IdentityConfig
        from coalmine.gateway.app import Gateway
        from coalmine.gateway.server import PROTOCOL
        from coalmine.gateway.source import SyncSource

        config = GatewayConfig(
            app=self.app,
            control_plane_url=self.plane_url,
            sdk_key=sdk_key,
            keyring=keyring,
            identity=IdentityConfig(user_header=USER_HEADER),
            timeout=10.0,
            local_workers=48,
        )
        gateway = Gateway(
            config, SyncSource(self.plane_url, sdk_key, self.app), metrics_interval=0.5
        )
        url = self._exit.enter_context(
            _served(gateway, http=PROTOCOL, port=gateway_command.DEFAULT_PORT)
        )
        deadline = time.monotonic() + 20
        with httpx.Client(timeout=5) as http:  # the gateway answers 503 until it has routing
            while http.get(f"{url}/kitchen/").status_code == 503:
                if time.monotonic() > deadline:
                    raise RuntimeError("the gateway got no routing from the control plane")
                time.sleep(0.05)
        return url

    # --- tear-down --------------------------------------------------------------------

    def stop_crowd(self) -> None:
        if self.crowd is not None:
            self.crowd.stop()

    def close(self) -> None:
        """Stop everything and remove the temporary directory; a second Ctrl-C meanwhile
        is ignored, so that it cannot leave half of it behind."""
        ignoring = threading.current_thread() is threading.main_thread()
        before = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignoring else None
        try:
            self._exit.close()
        finally:
            if ignoring:
                signal.signal(signal.SIGINT, before)
            for name, value in self._env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self._env.clear()
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None


def _forget_path(entry: str) -> None:
    if entry in sys.path:
        sys.path.remove(entry)


def _load_handler(ref: str) -> Callable[[Any], Any]:
    module, _, name = ref.partition(":")
    handler: Callable[[Any], Any] = getattr(importlib.import_module(module), name)
    return handler
