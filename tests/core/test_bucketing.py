"""The bucketing contract (DESIGN rule 3): golden vectors, an independent
reimplementation of the documented algorithm, and statistical properties."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core import BUCKETS, InvalidInput, bucket, new_salt
from coalmine.core.bucketing import SALT_PATTERN, validate_salt

DATA = Path(__file__).resolve().parent.parent / "data"
VECTOR_FILE = DATA / "bucket_vectors.json"


# --- an independent MurmurHash3_x86_32, written from the algorithm --------------------

_MASK = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """Austin Appleby's MurmurHash3_x86_32, as an unsigned 32-bit integer."""
    h = seed & _MASK
    n = len(data)
    body = n - n % 4
    for i in range(0, body, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _C1) & _MASK
        k = _rotl32(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
        h = _rotl32(h, 13)
        h = (h * 5 + 0xE6546B64) & _MASK
    tail = data[body:]
    k = 0
    if len(tail) == 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if len(tail) >= 1:
        k ^= tail[0]
        k = (k * _C1) & _MASK
        k = _rotl32(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
    h ^= n & _MASK
    return _fmix32(h)


def spec_bucket(salt: str, user_key: str) -> int:
    """bucket() as bucketing.py's docstring specifies it, without mmh3."""
    data = salt.encode("utf-8") + b":" + user_key.encode("utf-8", "surrogatepass")
    return murmur3_x86_32(data, 0) % 10000


@pytest.mark.parametrize(
    ("data", "seed", "expected"),
    [
        (b"", 0, 0),
        (b"", 1, 0x514E28B7),
        (b"", 0xFFFFFFFF, 0x81F16F39),
        (b"\x00\x00\x00\x00", 0, 0x2362F9DE),
        (b"\xff\xff\xff\xff", 0, 0x76293B50),
        (b"\x21\x43\x65\x87", 0, 0xF55B516B),
        (b"\x21\x43\x65", 0, 0x7E4A8634),
        (b"\x21\x43", 0, 0xA0F7B07A),
        (b"\x21", 0, 0x72661CF4),
        (b"a", 0x9747B28C, 0x7FA09EA6),
        (b"aaaa", 0x9747B28C, 0x5A97808A),
        (b"Hello, world!", 0x9747B28C, 0x24884CBA),
        (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
    ],
)
def test_reference_murmur_matches_published_vectors(data: bytes, seed: int, expected: int) -> None:
    assert murmur3_x86_32(data, seed) == expected


# --- golden vectors --------------------------------------------------------------------


def _load() -> dict[str, Any]:
    raw = VECTOR_FILE.read_bytes()
    return json.loads(raw.decode("utf-8"))  # strict UTF-8: no lone surrogates


DOC = _load()
VECTORS: list[dict[str, Any]] = DOC["vectors"]


def test_vector_file_is_readable_utf8_with_enough_cases() -> None:
    raw = VECTOR_FILE.read_bytes()
    text = raw.decode("utf-8")
    # human-readable: non-ASCII keys are written as themselves, not \u escapes
    assert "café" in text
    assert "中文用户" in text
    assert not re.search(r"\\u[dD][89a-fA-F]", text), "surrogate escapes in the JSON"
    assert DOC["count"] == len(VECTORS) >= 1000
    assert all(set(v) == {"salt", "user_key", "bucket"} for v in VECTORS)
    assert len({(v["salt"], v["user_key"]) for v in VECTORS}) == len(VECTORS)


def test_vectors_cover_the_awkward_keys() -> None:
    keys = {v["user_key"] for v in VECTORS}
    salts = {v["salt"] for v in VECTORS}
    assert len(salts) >= 5
    assert all(SALT_PATTERN.fullmatch(s) for s in salts)
    assert {"", " ", "\t", "0"} <= keys
    assert max(len(k) for k in keys) >= 10000
    assert any(len(k.encode()) > len(k) * 2 for k in keys if len(k) > 1000)  # long non-ASCII

    def has(pred: Any) -> bool:
        return any(any(pred(c) for c in k) for k in keys)

    assert has(lambda c: "CJK" in unicodedata.name(c, ""))
    assert has(lambda c: ord(c) >= 0x1F300)  # emoji, outside the BMP
    assert has(lambda c: unicodedata.bidirectional(c) in ("R", "AL"))  # Hebrew, Arabic
    assert has(lambda c: unicodedata.combining(c) > 0)
    assert has(lambda c: c in "àáâãäåçèéêëìíîïñòóôõöùúûüý")


def test_nfc_and_nfd_forms_are_different_users() -> None:
    by_key = {(v["salt"], v["user_key"]): v["bucket"] for v in VECTORS}
    pairs = [
        (salt, key, unicodedata.normalize("NFD", key))
        for salt, key in by_key
        if unicodedata.normalize("NFC", key) == key != unicodedata.normalize("NFD", key)
        and (salt, unicodedata.normalize("NFD", key)) in by_key
    ]
    assert len(pairs) >= 50
    for salt, nfc, nfd in pairs:
        assert by_key[salt, nfc] != by_key[salt, nfd], (salt, nfc)
        assert bucket(salt, nfc) != bucket(salt, nfd)


def test_every_vector_matches_bucket() -> None:
    wrong = [
        (v["salt"], v["user_key"][:40], v["bucket"], got)
        for v in VECTORS
        if (got := bucket(v["salt"], v["user_key"])) != v["bucket"]
    ]
    assert wrong == []


def test_every_vector_matches_the_documented_spec() -> None:
    """The docstring's algorithm, reimplemented without mmh3, gives every vector."""
    wrong = [
        (v["salt"], v["user_key"][:40])
        for v in VECTORS
        if spec_bucket(v["salt"], v["user_key"]) != v["bucket"]
    ]
    assert wrong == []


def test_generator_reproduces_the_vector_files() -> None:
    """The files are exactly what the (deterministic) generator writes: never hand-edited."""
    spec = importlib.util.spec_from_file_location("generate_vectors", DATA / "generate_vectors.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert set(rendered) == {VECTOR_FILE, DATA / "context_vectors.json"}
    for path, text in rendered.items():
        assert path.read_text(encoding="utf-8") == text, path.name


# --- lone surrogates (valid Python str, not valid UTF-8) -------------------------------
# Never hand such a str to mmh3.hash: it crashes the interpreter.


@pytest.mark.parametrize(
    "key",
    # built with chr(): ruff's duplicate check cannot tell lone surrogates apart
    [
        chr(0xD800),
        chr(0xDFFF),
        "a" + chr(0xD83D),
        chr(0xDE00) + "z",
        chr(0xD83D) + chr(0xDE00),
        "é" + chr(0xDC80),
        chr(0xDC80) * 1000,
    ],
)
@pytest.mark.parametrize("salt", ["a", "0123456789abcdef"])
def test_lone_surrogates_are_bucketed_as_generalised_utf8(salt: str, key: str) -> None:
    b = bucket(salt, key)
    assert 0 <= b < BUCKETS
    assert b == spec_bucket(salt, key)
    assert b == bucket(salt, key)


def test_surrogate_pair_spelled_as_two_code_points_is_not_the_emoji() -> None:
    # "\ud83d\ude00" is two lone surrogates (6 bytes), not U+1F600 (4 bytes)
    assert spec_bucket("a", "\ud83d\ude00") == bucket("a", "\ud83d\ude00")
    assert "\ud83d\ude00".encode("utf-8", "surrogatepass") != "😀".encode()


@settings(max_examples=150, deadline=None)
@given(
    salt=st.from_regex(SALT_PATTERN, fullmatch=True),
    key=st.text(st.characters(codec=None, categories=["Cs", "Lo", "Mn", "So", "Ll"]), max_size=8),
)
def test_bucket_never_crashes_and_follows_spec(salt: str, key: str) -> None:
    b = bucket(salt, key)
    assert 0 <= b < BUCKETS
    assert b == spec_bucket(salt, key)


# --- properties and statistics -----------------------------------------------------------


def test_bucket_takes_the_key_as_given() -> None:
    base = bucket("s", "user")
    assert [bucket("s", k) == base for k in ["user", "User", " user", "user ", "USER"]] == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert bucket("s1", "user") != bucket("s2", "user")


N_USERS = 100_000


def _within_sigmas(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= sigmas * sd + 1


def test_buckets_are_uniform() -> None:
    counts = Counter(bucket("uniformity", f"user-{i}") // 1000 for i in range(N_USERS))
    expected = N_USERS / 10
    chi2 = sum((counts[d] - expected) ** 2 / expected for d in range(10))
    assert chi2 < 33.7  # 9 degrees of freedom, p = 0.0001


def test_cohorts_of_two_salts_are_independent() -> None:
    a = {i for i in range(N_USERS) if bucket("release-a", f"user-{i}") < 1000}
    b = {i for i in range(N_USERS) if bucket("release-b", f"user-{i}") < 1000}
    assert _within_sigmas(len(a), N_USERS, 0.1)
    assert _within_sigmas(len(b), N_USERS, 0.1)
    assert _within_sigmas(len(a & b), N_USERS, 0.01)
    assert a != b


# --- salts ----------------------------------------------------------------------------------


def test_new_salt_is_a_valid_fresh_salt() -> None:
    salts = {new_salt() for _ in range(20)}
    assert len(salts) == 20
    for s in salts:
        assert re.fullmatch(r"[0-9a-f]{16}", s)
        assert validate_salt(s) == s
        assert ":" not in s


@pytest.mark.parametrize("salt", ["", "a:b", "x" * 65, "sp ace", "é", None, 5])
def test_validate_salt_rejects(salt: object) -> None:
    with pytest.raises(InvalidInput, match="invalid salt"):
        validate_salt(salt)  # type: ignore[arg-type]


@pytest.mark.parametrize("salt", ["a", "A-b_9", "x" * 64])
def test_validate_salt_accepts(salt: str) -> None:
    assert validate_salt(salt) == salt
