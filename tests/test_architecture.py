"""The layout holds: no import cycles anywhere in the package, every directory a package.

import-linter (``make lint``) checks the layer order of DESIGN.md and inside
``controller``; this checks what a layers contract cannot see: a cycle
between two modules of one layer, or a directory that is a namespace package
(invisible to import-linter, so none of its contracts would apply).
"""

from __future__ import annotations

from pathlib import Path

import grimp

import coalmine

PACKAGE = Path(coalmine.__file__).parent


def test_every_directory_of_the_package_is_a_regular_package() -> None:
    missing = [
        str(d.relative_to(PACKAGE))
        for d in PACKAGE.rglob("*")
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
        if not (d / "__init__.py").exists()
    ]
    assert missing == []


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("coalmine", cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported == importer or not imported.startswith("coalmine"):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append(" -> ".join((importer, *back)))
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)
