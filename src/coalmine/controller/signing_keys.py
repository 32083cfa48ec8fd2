"""The control plane's own signing keys: made on the first start, kept in the store.

When no keyring is given (``COALMINE_SIGNING_KEYS``, ``create_app(signing_keys=...)``),
the control plane signs discovery's routing contexts with a keyring it made on
its first start and keeps in the store (``server_secrets``), so that a restart
and every replica on the same database sign with the same keys. Gateways and
SDKs verify with the same keys: an admin reads them (``GET /v1/signing-keys``,
``coalmine signing-keys``) and gives them ``COALMINE_SIGNING_KEYS``. A keyring
given explicitly always wins, and is never stored.
"""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError

from coalmine.core.signing import Keyring
from coalmine.store.db import Store
from coalmine.store.models import ServerSecretRow

__all__ = ["SIGNING_KEYS_SECRET", "StoredSigningKeys"]

SIGNING_KEYS_SECRET = "signing_keys"
"""the name of the keyring's row: its value is ``kid:secret[,kid:secret...]``"""
_KEY_ID = "k1"


class StoredSigningKeys:
    """The keyring in the store, made once (the first replica to start wins a race)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def read(self) -> str | None:
        """The stored keyring as ``kid:secret[,...]`` (what ``COALMINE_SIGNING_KEYS`` takes),
        or None before the first start made one."""
        with self.store.transaction() as s:
            row = s.get(ServerSecretRow, SIGNING_KEYS_SECRET)
            return row.value if row is not None else None

    def load_or_create(self, now: float) -> tuple[Keyring, bool]:
        """The stored keyring, made now if there is none; True when this call made it."""
        spec = self.read()
        if spec is not None:
            return Keyring.parse(spec), False
        made = f"{_KEY_ID}:{secrets.token_urlsafe(32)}"
        try:
            with self.store.transaction() as s:
                s.add(ServerSecretRow(name=SIGNING_KEYS_SECRET, value=made, created_at=now))
        except IntegrityError:  # another replica made it first: use that one
            spec = self.read()
            assert spec is not None
            return Keyring.parse(spec), False
        return Keyring.parse(made), True
