"""The public surface of coalmine.core: every ``__all__`` is sorted and complete."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import pytest

import coalmine.core

SUBMODULES = sorted(f"coalmine.core.{m.name}" for m in pkgutil.iter_modules(coalmine.core.__path__))


def _isort_key(name: str) -> tuple[int, list[object]]:
    """isort-style order (ruff's RUF022): CONSTANTS, then Classes, then the rest."""
    if name.isupper() and len(name) > 1:
        category = 0
    elif name[:1].isupper():
        category = 1
    else:
        category = 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return category, natural


def _check(module: ModuleType) -> None:
    names = module.__all__
    assert isinstance(names, list | tuple)
    assert names == sorted(names, key=_isort_key), f"{module.__name__}.__all__ is not sorted"
    assert len(set(names)) == len(names), f"{module.__name__}.__all__ has duplicates"
    missing = [n for n in names if not hasattr(module, n)]
    assert missing == [], f"{module.__name__}.__all__ names missing attributes"


def test_the_sort_key_matches_isort_style() -> None:
    good = [
        "BUCKETS",
        "MAX_X",
        "App",
        "RejectKind",
        "Rejected",
        "Step2",
        "Step10",
        "bucket",
        "decide",
    ]
    assert sorted(good[4:] + good[:4], key=_isort_key) == good


def test_core_all() -> None:
    _check(coalmine.core)
    assert "decide" in coalmine.core.__all__
    assert "bucket" in coalmine.core.__all__


def test_core_expected_submodules_exist() -> None:
    assert {
        "coalmine.core.bucketing",
        "coalmine.core.context",
        "coalmine.core.errors",
        "coalmine.core.model",
        "coalmine.core.override",
        "coalmine.core.routing",
        "coalmine.core.signing",
        "coalmine.core.strategy",
    } <= set(SUBMODULES)


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_all(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    _check(module)


def test_core_reexports_the_submodules_objects() -> None:
    """Each name re-exported by coalmine.core is the object its submodule exports."""
    exported: dict[str, object] = {}
    for name in SUBMODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            exported.setdefault(attr, getattr(module, attr))
    for attr in coalmine.core.__all__:
        assert attr in exported, f"coalmine.core.{attr} is not in any submodule's __all__"
        assert getattr(coalmine.core, attr) is exported[attr], attr
