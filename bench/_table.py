"""How a bench prints its table: first column left-aligned, the rest right-aligned, a rule under the header."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["print_aligned"]


def print_aligned(lines: Sequence[Sequence[str]]) -> None:
    """Print ``lines`` (the header first) as columns two spaces apart."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for i, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * width for width in widths))
