"""Every code block in README.md and docs/*.md is checked, so the examples stay true.

- ```python blocks run (exec) in this process.
- ```sh blocks run in bash (``set -euo pipefail``): the runnable blocks of one
  page are one script, in the order they appear, in a fresh temporary
  directory, with this venv's ``coalmine`` first on ``PATH``,
  ``COALMINE_PORT`` / ``COALMINE_URL`` naming a free port for the page's
  ``coalmine serve`` and no ``COALMINE_TOKEN`` or ``COALMINE_DATABASE_URL``
  from the caller. Whatever the script leaves running (``coalmine serve &``)
  is killed with its process group at the end. A script that runs
  ``promtool`` gets Debian's (``scripts/install-prometheus.sh`` installs it
  when missing; the page is skipped, saying why, when it cannot be).
- Every ``127.0.0.1:PORT`` / ``localhost:PORT`` in the pages is one server's
  default port (``coalmine serve`` 8700, ``coalmine gateway`` 8800, ...).
- ```yaml blocks parse, and ``configuration.md`` is what
  ``python -m coalmine.cli.config_docs`` generates from the settings models.

An HTML comment on the line before a fence changes what happens to it:

- ``<!-- docs-test: skip REASON -->``: not run; the reason is required and
  each such block is reported as a skipped test with it (``pytest -rs``), so
  nothing is left out silently. For blocks that need AWS, a service that is
  not here (Grafana, SAM), placeholders the prose fills in, or minutes.
- ``<!-- docs-test: in-repo -->``: runs alone, in the repository root
  (``make demo``).
- ``<!-- docs-test: postgresql -->`` anywhere on a page: its sh script gets
  ``COALMINE_DATABASE_URL`` naming a fresh, empty PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from coalmine.cli import config_docs
from tests.metrics.served import promtool_binary
from tests.services import child_env, fresh_pg_database

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!-- docs-test: (skip|in-repo|postgresql)\b(.*?)-->\s*$")
SCRIPT_TIMEOUT = 240.0  # seconds: a loaded 2-core machine starts servers slowly


@dataclass(frozen=True)
class Block:
    page: Path
    index: int  # 1-based among the page's blocks of this language
    lang: str
    code: str
    marker: str | None  # skip / in-repo, or None
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}#{self.lang}{self.index}"


def _blocks(page: Path) -> list[Block]:
    out: list[Block] = []
    counts: dict[str, int] = {}
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        lang = opening.group(1)
        end = i + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        previous = lines[i - 1] if i else ""
        marked = MARKER.match(previous)
        kind = marked.group(1) if marked and marked.group(1) != "postgresql" else None
        counts[lang] = counts.get(lang, 0) + 1
        out.append(
            Block(
                page,
                counts[lang],
                lang,
                "\n".join(lines[i + 1 : end]) + "\n",
                kind,
                marked.group(2).strip() if marked else "",
            )
        )
        i = end + 1
    return out


ALL = [b for page in PAGES for b in _blocks(page)]
PYTHON = [b for b in ALL if b.lang == "python"]
SH = [b for b in ALL if b.lang == "sh"]
SKIPPED = [b for b in SH if b.marker == "skip"]
IN_REPO = [b for b in SH if b.marker == "in-repo"]
SESSIONS = {
    page: [b for b in SH if b.page == page and b.marker is None]
    for page in PAGES
    if any(b.page == page and b.marker is None for b in SH)
}


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_docs_have_examples() -> None:
    assert len(PYTHON) >= 5
    assert SESSIONS, "no page has an sh block that runs"


@pytest.mark.parametrize("block", PYTHON, ids=[b.where for b in PYTHON])
def test_doc_example_runs(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(block.code, block.where, "exec"), {"__name__": "__doc_example__"})


def test_every_marker_is_known_and_sits_on_a_fence() -> None:
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if not line.startswith("<!-- docs-test:"):
                continue
            where = f"{_id(page)}:{n + 1}"
            marked = MARKER.match(line)
            assert marked, f"{where}: unknown docs-test marker {line!r}"
            if marked.group(1) == "postgresql":
                continue
            following = lines[n + 1] if n + 1 < len(lines) else ""
            assert following.startswith("```sh"), (
                f"{where}: a {marked.group(1)} marker must sit right above a ```sh fence"
            )
            if marked.group(1) == "skip":
                assert len(marked.group(2).strip()) >= 10, f"{where}: say why it is skipped"


def test_the_skipped_blocks_are_the_listed_few() -> None:
    """A page may not quietly stop running its commands: skipping is the exception."""
    assert len(SKIPPED) < len(SH)
    assert all(b.reason for b in SKIPPED)


@pytest.mark.parametrize("block", SKIPPED, ids=[b.where for b in SKIPPED])
def test_skipped_sh_block(block: Block) -> None:
    pytest.skip(f"{block.where} not run: {block.reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(script: str, cwd: Path, env: dict[str, str], where: str) -> None:
    # Output goes to a file, not a pipe: a server the script left in the background
    # would hold a pipe open, and the wait is for the script, not for its children.
    with tempfile.NamedTemporaryFile("w+", prefix="docs-test-", suffix=".log") as sink:
        proc = subprocess.Popen(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=SCRIPT_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            # the script, if late, and what it left running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        sink.seek(0)
        out = sink.read()[-6000:]
    assert code is not None, f"{where} took over {SCRIPT_TIMEOUT:.0f} s:\n{out}"
    assert code == 0, f"{where} exited {code}:\n{out}"


def _env(port: int, **extra: str) -> dict[str, str]:
    extra.setdefault(
        "PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    env = child_env(
        COALMINE_PORT=str(port),
        COALMINE_URL=f"http://127.0.0.1:{port}",
        **extra,
    )
    for name in ("COALMINE_TOKEN", "COALMINE_DATABASE_URL", "COALMINE_BOOTSTRAP_TOKEN"):
        if name not in extra:
            env.pop(name, None)
    return env


@pytest.mark.parametrize("page", list(SESSIONS), ids=[_id(p) for p in SESSIONS])
def test_doc_commands_run(page: Path, tmp_path: Path) -> None:
    script = "\n".join(f"# {b.where}\n{b.code}" for b in SESSIONS[page])
    port = _free_port()
    extra: dict[str, str] = {}
    if re.search(r"\bpromtool\b", script):
        # Debian's prometheus package, installed by the project's script (or the test skips)
        tool = Path(promtool_binary()).parent
        extra["PATH"] = (
            f"{Path(sys.executable).parent}{os.pathsep}{tool}{os.pathsep}{os.environ.get('PATH', '')}"
        )
    if "<!-- docs-test: postgresql" in page.read_text(encoding="utf-8"):
        with fresh_pg_database() as url:
            _run(script, tmp_path, _env(port, COALMINE_DATABASE_URL=url, **extra), _id(page))
    else:
        _run(script, tmp_path, _env(port, **extra), _id(page))


@pytest.mark.parametrize("block", IN_REPO, ids=[b.where for b in IN_REPO])
def test_doc_commands_in_repo_run(block: Block) -> None:
    _run(block.code, ROOT, _env(_free_port()), block.where)


YAML = [b for b in ALL if b.lang == "yaml"]


class _CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that accepts CloudFormation's short tags (``!Ref``, ``!Equals``) in SAM pages."""


_CloudFormationLoader.add_multi_constructor("!", lambda _loader, _suffix, _node: None)


@pytest.mark.parametrize("block", YAML, ids=[b.where for b in YAML])
def test_yaml_block_parses(block: Block) -> None:
    assert yaml.load(block.code, Loader=_CloudFormationLoader) is not None


def test_configuration_reference_is_generated_from_the_models() -> None:
    committed = (ROOT / config_docs.PAGE).read_text(encoding="utf-8")
    assert committed == config_docs.render(), (
        "docs/configuration.md differs from the models: run"
        " .venv/bin/python -m coalmine.cli.config_docs > docs/configuration.md"
    )


def test_configuration_check_fails_on_a_stale_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    page = tmp_path / config_docs.PAGE
    page.write_text(config_docs.render().replace("`Canary10Percent5Minutes`", "`x`", 1))
    assert config_docs.main(["config_docs", "--check"]) == 1
    assert "python -m coalmine.cli.config_docs" in capsys.readouterr().err
    page.write_text(config_docs.render())
    assert config_docs.main(["config_docs", "--check"]) == 0


LOCAL_URL = re.compile(r"\b(?:127\.0\.0\.1|localhost|0\.0\.0\.0):(\d+)\b")


def test_one_port_for_each_server_everywhere() -> None:
    """The docs name each server by its default port: a page may not invent another."""
    from coalmine.cli import client, gateway, serve
    from coalmine.integrations import lambda_local

    assert f"http://127.0.0.1:{serve.DEFAULT_PORT}" == client.DEFAULT_URL
    known = {
        serve.DEFAULT_PORT: "coalmine serve",
        serve.DEFAULT_PORT + 1: "a second replica (operations.md)",
        serve.DEFAULT_PORT + 2: "a third replica (operations.md)",
        gateway.DEFAULT_PORT: "coalmine gateway",
        lambda_local.DEFAULT_PORT: "coalmine lambda local",
        9090: "Prometheus",
        4222: "NATS",
        6379: "Redis",
        9: "the discard port: nothing listens",
    }
    for page in PAGES:
        if page.name == "benchmarks.md":  # the benchmarks start their servers on ports of their own
            continue
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for port in LOCAL_URL.findall(line):
                assert int(port) in known, f"{_id(page)}:{n}: port {port} is no server's default"
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for default in (serve.DEFAULT_PORT, gateway.DEFAULT_PORT):
        assert "| `--port` |" in reference
        assert f"| `{default}` | Port to listen on. |" in reference
