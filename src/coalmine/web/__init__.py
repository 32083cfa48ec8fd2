"""The control plane's web layer: the REST API, the routing snapshot and its SSE stream.

Needs the ``server`` extra (FastAPI, uvicorn); `create_app` builds the ASGI
application over a store.
"""

from coalmine._extras import require

require("fastapi", "server")

from coalmine.web.app import create_app  # noqa: E402

__all__ = ["create_app"]
