"""What one controller tick costs the store: transactions and SQL statements per running release.

N apps each run one release of two changed functions with analysis settings
(``interval: 1m``) on a fresh SQLite file; a hand-moved clock drives the
`Controller` through four kinds of tick, and each is counted:

* **start**: every release is due (pending): each takes its first step;
* **idle**: nothing is due (the hold and the next analysis lie ahead);
* **analysis**: every release's analysis interval has passed (no metrics:
  each run is inconclusive, recorded, nothing else changes);
* **idle after**: nothing is due again.

A transaction is one ``Store.transaction()`` or ``Store.snapshot()``; a
statement is one SQL statement sent to the database. Counts are exact and
repeatable (no timing). With ``--base DIR`` the same scenario also runs
against another checkout's sources (``DIR/src``, e.g. a worktree of an
older commit, whose control plane may have the older ``ControlService``
API) in a child process, and the table shows both side by side. With
``--webhooks K`` each app has K event webhooks (plain URLs; nothing is sent):
what the webhook outbox adds to the transactions that write release events.

    .venv/bin/python bench/controller_tick.py
    .venv/bin/python bench/controller_tick.py --releases 10 --base /tmp/old-checkout
    .venv/bin/python bench/controller_tick.py --webhooks 3 --base /tmp/old-checkout

It prints a table and, last, one JSON line::

    {"bench": "controller_tick", "releases": N, "webhooks": K,
     "transactions_per_release": {"start": .., "idle": .., "analysis": .., "idle_after": ..},
     "statements_per_release": {...}, "base": {...} | null}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _table import print_aligned

T0 = 1_700_000_000.0
TICKS = ("start", "idle", "analysis", "idle_after")
AT = {"start": T0, "idle": T0 + 1, "analysis": T0 + 61, "idle_after": T0 + 62}


class _NoHooks:
    def run(self, *_args: object) -> Any:
        raise AssertionError("no release of this bench has hooks")


def measure(releases: int, webhooks: int = 0) -> dict[str, dict[str, float]]:
    """Counts per release for each tick kind, on the code importable as ``coalmine``."""
    from sqlalchemy import event

    from coalmine.controller.leader import SoleLeadership
    from coalmine.controller.loop import Controller
    from coalmine.controller.schemas import (
        AppSpec,
        FunctionSpec,
        ReleaseCreate,
        ReleaseSettings,
    )
    from coalmine.store.db import Store, open_store

    now = [T0]
    counts = {"transactions": 0, "statements": 0}

    def counting(method: Callable[..., Any]) -> Callable[..., Any]:
        @contextmanager
        def wrapped(self: Store) -> Iterator[Any]:
            counts["transactions"] += 1
            with method(self) as session:
                yield session

        return wrapped

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        Store.transaction = counting(Store.transaction)  # type: ignore[method-assign]
        Store.snapshot = counting(Store.snapshot)  # type: ignore[method-assign]

        def statement(*_args: object) -> None:
            counts["statements"] += 1

        event.listen(store.engine, "before_cursor_execute", statement)
        plane, apply, start = _control_plane(store, lambda: now[0])
        for i in range(releases):
            app = f"app{i}"
            versions = {"v1": "bench.fn:v1", "v2": "bench.fn:v2"}
            apply(
                AppSpec(
                    app=app,
                    functions={
                        "cart": FunctionSpec(versions=versions, current="v1"),
                        "pay": FunctionSpec(versions=versions, current="v1"),
                    },
                    release=ReleaseSettings(
                        webhooks=[f"http://127.0.0.1:9/{app}/{n}" for n in range(webhooks)]
                    ),
                ),
                "bench",
            )
            start(
                app,
                ReleaseCreate.model_validate(
                    {
                        "candidate": {"cart": "v2", "pay": "v2"},
                        "strategy": "10%:10m, 100%",
                        "analysis": {"interval": "1m"},
                    }
                ),
                "bench",
            )
        controller = Controller(
            plane, leadership=SoleLeadership(), hooks=_NoHooks(), clock=lambda: now[0]
        )
        out: dict[str, dict[str, float]] = {"transactions": {}, "statements": {}}
        for kind in TICKS:
            now[0] = AT[kind]
            counts.update(transactions=0, statements=0)
            controller.tick()
            for what in ("transactions", "statements"):
                out[what][kind] = round(counts[what] / releases, 2)
        store.dispose()
    return out


def _control_plane(store: Any, clock: Callable[[], float]) -> tuple[Any, Any, Any]:
    """(what the Controller takes, apply, start a release) for either layout."""
    try:
        from coalmine.controller.plane import ControlPlane
    except ImportError:  # the layout before the control plane was split by concern
        from coalmine.controller.service import (  # type: ignore[import-untyped]
            ControlService,
        )

        svc = ControlService(store, clock=clock)
        return svc, svc.apply, svc.start_release
    plane = ControlPlane(store, clock=clock)
    return plane, plane.catalog.apply, plane.releases.start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=10, help="running releases (default 10)")
    parser.add_argument("--base", type=Path, help="another checkout to measure side by side")
    parser.add_argument(
        "--webhooks", type=int, default=0, help="event webhooks of each app (default 0)"
    )
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.releases < 1:
        parser.error("--releases must be at least 1")
    if args.webhooks < 0:
        parser.error("--webhooks must be at least 0")
    here = measure(args.releases, args.webhooks)
    if args.raw:
        print(json.dumps(here))
        return 0
    base = _measure_base(args.base, args.releases, args.webhooks) if args.base else None
    header = ["tick", "transactions", "statements"]
    if base:
        header = ["tick", "transactions (base)", "transactions", "statements (base)", "statements"]
    rows = []
    for kind in TICKS:
        if base:
            rows.append(
                [
                    kind,
                    f"{base['transactions'][kind]:g}",
                    f"{here['transactions'][kind]:g}",
                    f"{base['statements'][kind]:g}",
                    f"{here['statements'][kind]:g}",
                ]
            )
        else:
            rows.append([kind, f"{here['transactions'][kind]:g}", f"{here['statements'][kind]:g}"])
    print(f"per running release, {args.releases} releases, {args.webhooks} webhooks each (SQLite)")
    print_aligned([header, *rows])
    print(
        json.dumps(
            {
                "bench": "controller_tick",
                "releases": args.releases,
                "webhooks": args.webhooks,
                "transactions_per_release": here["transactions"],
                "statements_per_release": here["statements"],
                "base": base,
            }
        )
    )
    return 0


def _measure_base(base: Path, releases: int, webhooks: int) -> dict[str, Any]:
    src = base / "src"
    if not (src / "coalmine").is_dir():
        raise SystemExit(f"--base {base}: no src/coalmine there")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(Path(__file__).parent)])}
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--raw",
            "--releases",
            str(releases),
            "--webhooks",
            str(webhooks),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"--base {base}: the run failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    sys.exit(main())
