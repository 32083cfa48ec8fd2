"""The HTTP client the chain functions share.

The gateway loads each version of a handler module into its own namespace,
so a client held in chain_fns would exist once per version; held here (a
normal import), there is one, and tests can close it.
"""

from __future__ import annotations

import httpx

from coalmine.sdk import instrument_httpx

instrument_httpx()
client = httpx.Client(timeout=30)


def reset() -> None:
    """Close the pooled connections (to a gateway a test is done with)."""
    global client
    client.close()
    client = httpx.Client(timeout=30)
