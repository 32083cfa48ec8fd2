"""Write tests/data/bucket_vectors.json and tests/data/context_vectors.json.

DO NOT RE-RUN THIS CASUALLY. The vectors pin wire contracts: the bucketing
function (DESIGN rule 3: a change would move users between channels in the
middle of a release) and the signed routing-context format that other
languages' SDKs must reproduce byte for byte. Re-run it only deliberately,
when such a contract is meant to change (or to add cases), and review the
diff of the JSON files: existing vectors must not change.

    .venv/bin/python tests/data/generate_vectors.py

Output is deterministic: a fixed seed, fixed keys, fixed clock values.
"""

from __future__ import annotations

import json
import random
import sys
import unicodedata
from pathlib import Path
from typing import Any

from coalmine.core import Channel, Decision, Keyring, Reason, bucket, encode_context
from coalmine.core.context import PURPOSE as CONTEXT_PURPOSE
from coalmine.core.context import bind_user
from coalmine.core.override import PURPOSE as OVERRIDE_PURPOSE
from coalmine.core.signing import seal

SEED = 20240601
DATA = Path(__file__).resolve().parent
BUCKET_FILE = DATA / "bucket_vectors.json"
CONTEXT_FILE = DATA / "context_vectors.json"

SALTS = [
    "a",
    "0",
    "rel-1",
    "r_2024_06",
    "0123456789abcdef",
    "ffffffffffffffff",
    "Z" * 64,
]

# Visible text in composed (NFC) form; the NFD form of each is added as well.
NORMALISATION_TEXTS = [
    "é",
    "café",
    "José",
    "Ångström",
    "naïve",
    "Crème brûlée",
    "Đặng Thị Ánh",
    "한국어",
    "가",
    "ñ",
    "Zoë",
    "façade",
]

CURATED_KEYS = [
    # empty-ish and whitespace
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\u00a0",
    "\u3000",
    "\u200b",
    "\ufeff",
    "\x00",
    "0",
    "00",
    "-1",
    "null",
    "None",
    "undefined",
    ":",
    "::",
    "a:b",
    "=",
    ",",
    ";",
    "%20",
    "user",
    "User",
    "USER",
    " user",
    "user ",
    "user-1",
    "user-2",
    "alice@example.com",
    "Alice@Example.com",
    "550e8400-e29b-41d4-a716-446655440000",
    "9223372036854775807",
    # accents, CJK, emoji, RTL, combining characters
    "ü",
    "Müller",
    "straße",
    "STRASSE",
    "İstanbul",
    "ǅ",
    "ﬁ",
    "中文用户",
    "用户",
    "日本語のユーザー",
    "ｆｕｌｌｗｉｄｔｈ",  # noqa: RUF001
    "𠀋𡈽",
    "😀",
    "👩‍👩‍👧‍👦",
    "👍🏽",
    "🇫🇷",
    "🏳️‍🌈",
    "\U0010ffff",
    "\ue000",
    "שלום",
    "مرحبا بالعالم",
    "\u200fRTL-mark",
    "abc\u202edcba",
    "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "e\u0301\u0301\u0301",
    "\u0301",
    "\u2126",  # OHM SIGN; NFC maps it to GREEK CAPITAL LETTER OMEGA
    "\u03a9",
    "\u2028\u2029",
]

# very long keys (under fewer salts, to keep the file readable)
LONG_KEYS = [
    "x" * 1000,
    "x" * 10000,
    "é" * 2000,
    "漢" * 3000,
    "😀" * 1000,
    "ab" * 4097,
]
LONG_KEY_SALTS = 3


def _random_key(rng: random.Random) -> str:
    """A key of one of several shapes: ASCII ids, mixed Unicode, short runs."""
    shape = rng.randrange(4)
    if shape == 0:
        return f"user-{rng.randrange(10**9)}"
    if shape == 1:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@+ "
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
    if shape == 2:
        # any code point that is not a surrogate (lone surrogates are not UTF-8)
        out = []
        for _ in range(rng.randrange(1, 12)):
            cp = rng.randrange(0x20, 0x110000)
            while 0xD800 <= cp <= 0xDFFF:
                cp = rng.randrange(0x20, 0x110000)
            out.append(chr(cp))
        return "".join(out)
    blocks = [(0x00C0, 0x017F), (0x0370, 0x03FF), (0x0590, 0x06FF), (0x4E00, 0x9FFF)]
    lo, hi = rng.choice(blocks)
    return "".join(chr(rng.randrange(lo, hi + 1)) for _ in range(rng.randrange(1, 10)))


def bucket_vectors() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    keys: list[str] = list(CURATED_KEYS)
    for text in NORMALISATION_TEXTS:
        nfc, nfd = unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text)
        assert nfc != nfd, text
        keys += [nfc, nfd]
    keys += [_random_key(rng) for _ in range(400)]
    salts = [*SALTS, *(f"{rng.getrandbits(64):016x}" for _ in range(3))]
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []

    def add(salt: str, key: str) -> None:
        if (salt, key) not in seen:
            seen.add((salt, key))
            out.append({"salt": salt, "user_key": key, "bucket": bucket(salt, key)})

    # every curated key under every salt; long keys under a few; random keys under one each
    for key in keys[: len(keys) - 400]:
        for salt in salts:
            add(salt, key)
    for key in LONG_KEYS:
        for salt in salts[:LONG_KEY_SALTS]:
            add(salt, key)
    for key in keys[len(keys) - 400 :]:
        add(rng.choice(salts), key)
    return out


def context_vectors() -> dict[str, Any]:
    key = bytes(range(32))
    kid = "k1"
    keyring = Keyring({kid: key}, kid)
    now = 1_700_000_000
    decisions = [
        (
            "food-ordering",
            "r-2024.06.01",
            Channel.CANARY,
            {"place-order": "v2", "notify-user": "v1"},
            3600,
        ),
        (
            "food-ordering",
            "r-2024.06.01",
            Channel.STABLE,
            {"place-order": "v1", "notify-user": "v1"},
            3600,
        ),
        ("a", "1", Channel.CANARY, {"f": "1"}, 1),
        (
            "shop",
            "rel_7",
            Channel.STABLE,
            {"cart": "2024-06-01.3", "checkout": "A.b_c-d", "z9": "9"},
            600,
        ),
        (
            "app-with-many-functions",
            "release-42",
            Channel.CANARY,
            {f"fn-{i:02d}": f"v{i}.0.{i * 7}" for i in range(12)},
            86400,
        ),
    ]
    # Contexts bound to the user they were decided for ("u"); the ones above name no user, as
    # every coalmine signed them before bindings (they still decode, at a hop without a user).
    bound = [
        ("food-ordering", "r-2024.06.01", Channel.CANARY, {"place-order": "v2"}, 3600, "alice"),
        ("shop", "rel_7", Channel.STABLE, {"cart": "2"}, 600, "zoë@example.com"),
        ("shop", "rel_7", Channel.CANARY, {"cart": "3"}, 600, "用户-🐤"),
    ]
    valid = []
    for app, rid, channel, versions, ttl, *user in [*decisions, *bound]:
        d = Decision(app, rid, channel, versions, Reason.COHORT)
        token = encode_context(d, keyring, now=now, ttl=ttl, user=user[0] if user else None)
        vector = {
            "app": app,
            "release_id": rid,
            "channel": str(channel),
            "versions": dict(sorted(versions.items())),
            "now": now,
            "ttl": ttl,
            "expires_at": now + ttl,
            "encoded": token,
        }
        if user:
            vector |= {"user": user[0], "binding": bind_user(keyring, user[0])}
        valid.append(vector)
    alice = next(v["encoded"] for v in valid if v.get("user") == "alice")
    good = valid[0]["encoded"]
    e = valid[0]["expires_at"]
    head, sig = good.rsplit(".", 1)
    version, _, rest = good.partition(".")
    flipped = "A" if sig[0] != "A" else "B"
    # The last of 22 signature characters holds 2 signature bits and 4 zero
    # bits; the next letter of the alphabet differs only in those zero bits.
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    padding_twin = b64[b64.index(sig[-1]) + 1]
    other_key = Keyring({"k2": bytes(range(100, 132))}, "k2")
    base_claims = {"a": "food-ordering", "r": "r-1", "c": "c", "v": {"f": "v1"}, "e": e}

    def signed(claims: Any, purpose: str = CONTEXT_PURPOSE) -> str:
        return seal(purpose, keyring, claims)

    invalid = [
        ("empty string", "", now, "malformed"),
        ("not a token", "hello", now, "malformed"),
        ("three parts", head, now, "malformed"),
        ("signature too short", good[:-1], now, "malformed"),
        ("signature too long", good + "A", now, "malformed"),
        ("non-ASCII character", good[:-1] + "é", now, "malformed"),
        ("unsupported format version", "2" + good[1:], now, "unsupported_version"),
        ("unsupported version, short form", "2.k1.x.y", now, "unsupported_version"),
        ("oversized", "1.k1." + "A" * 2100 + "." + sig, now, "oversized"),
        ("unknown key id", seal(CONTEXT_PURPOSE, other_key, base_claims), now, "unknown_key"),
        ("tampered signature", f"{head}.{flipped}{sig[1:]}", now, "bad_signature"),
        (
            "tampered signature padding bits",
            f"{head}.{sig[:-1]}{padding_twin}",
            now,
            "bad_signature",
        ),
        (
            "tampered payload",
            f"{version}.{rest[:8]}{'B' if rest[8] != 'B' else 'C'}{rest[9:]}",
            now,
            "bad_signature",
        ),
        (
            "override token (wrong purpose)",
            signed(base_claims, OVERRIDE_PURPOSE),
            now,
            "bad_signature",
        ),
        ("expired: now == e", good, e, "expired"),
        ("expired: now > e", good, e + 1000, "expired"),
        ("no expiry", signed({k: v for k, v in base_claims.items() if k != "e"}), now, "invalid"),
        ("boolean expiry", signed({**base_claims, "e": True}), now, "invalid"),
        ("string expiry", signed({**base_claims, "e": str(e)}), now, "invalid"),
        ("payload is a list", signed([1, 2]), now, "invalid"),
        ("unknown channel code", signed({**base_claims, "c": "x"}), now, "invalid"),
        ("bad app name", signed({**base_claims, "a": "Food Ordering"}), now, "invalid"),
        (
            "missing release id",
            signed({k: v for k, v in base_claims.items() if k != "r"}),
            now,
            "invalid",
        ),
        ("empty release id", signed({**base_claims, "r": ""}), now, "invalid"),
        ("versions not an object", signed({**base_claims, "v": ["f", "v1"]}), now, "invalid"),
        ("bad version name", signed({**base_claims, "v": {"f": ".v1"}}), now, "invalid"),
        (
            "user binding without a key id",
            signed({**base_claims, "u": "AAAAAAAAAAAAAAAA"}),
            now,
            "invalid",
        ),
        ("user binding too short", signed({**base_claims, "u": "k1.AAAA"}), now, "invalid"),
        ("user binding not a string", signed({**base_claims, "u": 7}), now, "invalid"),
    ]
    # Rejected only at a hop that knows its user ("user"): the context is otherwise valid.
    for_user = [
        ("decided for another user", alice, now, "other_user", "mallory"),
        ("decided for a user of another case", alice, now, "other_user", "Alice"),
        ("names no user, at a hop that knows its user", good, now, "unbound", "alice"),
        (
            "user bound with an unknown key id",
            signed({**base_claims, "u": "k9.AAAAAAAAAAAAAAAA"}),
            now,
            "unknown_key",
            "alice",
        ),
    ]
    return {
        "description": (
            "Wire vectors for coalmine routing contexts (W3C baggage member 'coalmine'). "
            "Token: 1.<kid>.<b64url(payload)>.<b64url(sig)>, no padding; payload is compact, "
            "key-sorted JSON (UTF-8, non-ASCII unescaped) of {a: app, c: 'c'|'s', e: now+ttl, "
            "r: release id, v: {function: version}}; sig is the first 16 bytes of "
            "HMAC-SHA256(key, 'coalmine-context' || 0x00 || '1.<kid>.<payload>'). "
            "A token is expired when now >= e. A context bound to its user has u: "
            "'<kid>.<b64url(HMAC-SHA256(key, 'coalmine-user' || 0x00 || UTF-8(user))[:12])>'; "
            "a vector with 'user' is decoded by a hop serving that user, and an invalid one "
            "with 'user' is rejected only there. Generated by generate_vectors.py."
        ),
        "key_hex": key.hex(),
        "kid": kid,
        "valid": valid,
        "invalid": [
            *(
                {"case": case, "encoded": token, "now": at, "reject": kind}
                for case, token, at, kind in invalid
            ),
            *(
                {"case": case, "encoded": token, "now": at, "user": user, "reject": kind}
                for case, token, at, kind, user in for_user
            ),
        ],
    }


def _dump_bucket_file(vectors: list[dict[str, Any]]) -> str:
    lines = [json.dumps(v, ensure_ascii=False) for v in vectors]
    header = {
        "description": (
            "Golden vectors of coalmine.core.bucket (DESIGN rule 3): "
            "bucket = MurmurHash3_x86_32(UTF-8(salt) || ':' || UTF-8(user_key), seed 0) "
            "as unsigned, mod 10000. Keys are not normalised: NFC and NFD forms differ. "
            "Generated by generate_vectors.py; never edited by hand."
        ),
        "count": len(vectors),
    }
    head = json.dumps(header, ensure_ascii=False, indent=2)[:-2]
    return head + ',\n  "vectors": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n"


def render() -> dict[Path, str]:
    """The exact text of each vector file."""
    return {
        BUCKET_FILE: _dump_bucket_file(bucket_vectors()),
        CONTEXT_FILE: json.dumps(context_vectors(), ensure_ascii=False, indent=2) + "\n",
    }


def main() -> int:
    for path, text in render().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
