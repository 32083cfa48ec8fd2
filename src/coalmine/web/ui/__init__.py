"""The operator dashboard at ``/ui``: a public shell, token-fetched HTML fragments, SVG charts.

docs/ui.md says how it authenticates (the shell holds no data; every fragment
needs a viewer token the browser keeps in sessionStorage) and how it updates.
"""

from __future__ import annotations

from coalmine.web.ui.routes import router

__all__ = ["router"]
