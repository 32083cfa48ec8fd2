"""A headless Chromium driven over the DevTools protocol: launch, evaluate, click, screenshot.

Just enough of the protocol for the dashboard's browser test, over the
`websockets` sync client; Debian's ``chromium`` comes from
scripts/install-chromium.sh.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.services import required

_LISTENING = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")


def chromium_binary() -> str:
    """Debian's ``chromium``; skips (fails with COALMINE_REQUIRE_SERVICES=1) when it is absent."""
    found = shutil.which("chromium")
    if found:
        return found
    message = "chromium is not installed: run scripts/install-chromium.sh"
    if required():
        pytest.fail(message + " (COALMINE_REQUIRE_SERVICES=1)")
    pytest.skip(message)


class Page:
    """One tab: ``call`` a protocol method and wait for its answer (events are dropped)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> float:
        """Poll ``expression`` until it is truthy; the seconds it took (fails at ``timeout``)."""
        start = time.monotonic()
        while self.evaluate(f"!!({expression})") is not True:
            if time.monotonic() - start > timeout:
                raise AssertionError(f"not true within {timeout}s: {expression}")
            time.sleep(0.02)
        return time.monotonic() - start

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element ``selector`` names."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot")["data"]))


@contextmanager
def browser(profile: Path) -> Iterator[Page]:
    """A headless Chromium with a blank tab; stopped (and its profile left in ``profile``)."""
    proc = subprocess.Popen(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1200,1400",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        port = ""
        for line in proc.stderr:  # chromium prints its endpoint on stderr once it listens
            found = _LISTENING.search(line)
            if found:
                port = found.group(2)
                break
        assert port, "chromium exited without a DevTools endpoint"
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            yield Page(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
