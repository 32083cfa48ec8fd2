"""`coalmine signing-keys`: print the control plane's stored signing keys (admin token).

The output is the value of ``COALMINE_SIGNING_KEYS`` and nothing else, so that
``export COALMINE_SIGNING_KEYS="$(coalmine signing-keys)"`` gives a gateway or an
SDK the keys discovery signs routing contexts with.
"""

from __future__ import annotations

import sys

from coalmine.cli.client import ApiClient
from coalmine.cli.options import JsonOpt, TokenOpt, UrlOpt
from coalmine.cli.output import print_json

__all__ = ["command"]


def command(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Print the signing keys the control plane made on its first start (the value of
    COALMINE_SIGNING_KEYS for gateways and SDKs); needs an admin token."""
    with ApiClient(url, token) as client:
        result = client.get("/v1/signing-keys")
    if as_json:
        print_json(result)
        return
    sys.stdout.write(result["keys"] + "\n")
