"""A real Prometheus server on 127.0.0.1 for the alarm tests, scraping an exporter the test controls.

`prometheus_binary` finds Debian's ``prometheus`` (installing it with
``scripts/install-prometheus.sh`` when missing); when it cannot be had the
test skips with the reason, or fails with ``COALMINE_REQUIRE_SERVICES=1``.
`PrometheusServer` starts ``prometheus`` with a 1-second scrape interval on
a free port and a temporary storage directory, and stops it afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.helpers import free_port
from tests.services import required

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install-prometheus.sh"
METRIC = "coalmine_test_p99_seconds"


def prometheus_binary() -> str:
    """The ``prometheus`` executable; installs Debian's package when it is missing."""
    found = shutil.which("prometheus")
    if found:
        return found
    try:
        proc = subprocess.run(
            [str(INSTALL)], capture_output=True, text=True, timeout=900, check=False
        )
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [
            f"exit {proc.returncode}"
        ]
    except (OSError, subprocess.TimeoutExpired) as exc:
        detail = [str(exc)]
    found = shutil.which("prometheus")
    if found:
        return found
    message = f"prometheus is not installed and {INSTALL.name} could not install it: {detail[0]}"
    if required():
        pytest.fail(message + " (COALMINE_REQUIRE_SERVICES=1)")
    pytest.skip(message)


class Exporter:
    """A tiny /metrics endpoint with one gauge whose value the test sets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gauge = Gauge(
            METRIC, "p99 latency the test pretends to measure", registry=self.registry
        )
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, value: float) -> None:
        self.gauge.set(value)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class PrometheusServer:
    """``prometheus`` on a free 127.0.0.1 port scraping ``targets`` every second."""

    def __init__(
        self, workdir: Path, targets: list[str], *, credentials: str | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        listed = ", ".join(f"'{t}'" for t in targets)
        # a bearer token sent to every target (the control plane's /metrics wants a scraper's)
        auth = f"    authorization:\n      credentials: '{credentials}'\n" if credentials else ""
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            f"  - job_name: coalmine-test\n{auth}"
            f"    static_configs:\n      - targets: [{listed}]\n",
            encoding="utf-8",
        )
        self.args = [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=5)

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited at start: {self.log.read_text()[-2000:]}")
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def query(self, promql: str) -> list[Any]:
        r = self.http.get("/api/v1/query", params={"query": promql})
        r.raise_for_status()
        result: list[Any] = r.json()["data"]["result"]
        return result

    def wait_value(self, promql: str, value: float, timeout: float = 30.0) -> None:
        """Wait until Prometheus has scraped ``value`` (polling its API with a deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.query(promql)
            if samples and all(float(s["value"][1]) == value for s in samples):
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Prometheus did not see {promql} = {value} within {timeout}s: {samples}"
                )
            time.sleep(0.2)
