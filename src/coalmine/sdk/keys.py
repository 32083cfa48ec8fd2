"""Signing keys for the routing context, read from the environment."""

from __future__ import annotations

import os

from coalmine.core.errors import InvalidInput
from coalmine.core.signing import Keyring

__all__ = ["SIGNING_KEYS_ENV", "keyring_from_env"]

SIGNING_KEYS_ENV = "COALMINE_SIGNING_KEYS"


def keyring_from_env(var: str = SIGNING_KEYS_ENV) -> Keyring | None:
    """The keyring in ``$var`` (``"kid:secret[,kid:secret...]"``, first active), or None.

    An unset or blank variable gives None (contexts are then neither signed nor
    honoured); a malformed one raises InvalidInput naming the variable, since a
    process that silently ran without its keys would break every pinned chain.
    """
    spec = os.environ.get(var, "").strip()
    if not spec:
        return None
    try:
        return Keyring.parse(spec)
    except InvalidInput as exc:
        raise InvalidInput(f"${var}: {exc}") from None
