"""keyring_from_env: COALMINE_SIGNING_KEYS, first key active."""

from __future__ import annotations

import pytest

from coalmine.core.errors import InvalidInput
from coalmine.core.signing import Keyring
from coalmine.sdk import SIGNING_KEYS_ENV, keyring_from_env


def test_unset_or_blank_means_no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIGNING_KEYS_ENV, raising=False)
    assert keyring_from_env() is None
    monkeypatch.setenv(SIGNING_KEYS_ENV, "  ")
    assert keyring_from_env() is None


def test_reads_keys_with_the_first_active(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIGNING_KEYS_ENV, "k2:new-secret-0123456789, k1:old-secret-0123456789")
    ring = keyring_from_env()
    assert ring == Keyring({"k2": b"new-secret-0123456789", "k1": b"old-secret-0123456789"}, "k2")
    monkeypatch.setenv("MY_KEYS", "a:another-secret-0123456789")
    other = keyring_from_env("MY_KEYS")
    assert other is not None
    assert other.active == "a"


@pytest.mark.parametrize("spec", ["secret-without-kid", "k1:short", "bad kid!:secret-0123456789"])
def test_a_malformed_spec_names_the_variable(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv(SIGNING_KEYS_ENV, spec)
    with pytest.raises(InvalidInput, match=r"^\$COALMINE_SIGNING_KEYS: "):
        keyring_from_env()
