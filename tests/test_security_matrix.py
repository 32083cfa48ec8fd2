"""docs/security.md's matrix stays true: four columns a row, and every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows() -> list[list[str]]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index("| threat | tried | defence | test |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_row_names_a_threat_an_attempt_a_defence_and_a_test_that_exists() -> None:
    rows = _rows()
    assert rows
    missing = []
    for threat, tried, defence, test in rows:
        assert all((threat, tried, defence)), threat
        named = NAMED.findall(test)
        assert named, f"row {threat!r} names no test as `tests/...py::test_name`"
        for path, name in named:
            file = ROOT / path
            if not file.is_file() or name not in _functions(file):
                missing.append(f"{path}::{name}")
    assert missing == []
