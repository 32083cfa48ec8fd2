"""What a bench raises when a run cannot give trustworthy numbers."""

from __future__ import annotations

__all__ = ["BenchError"]


class BenchError(Exception):
    """The run cannot give trustworthy numbers; the message says why (exit 1)."""
