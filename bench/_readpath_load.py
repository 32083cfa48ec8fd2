"""The load of bench/readpath.py: one wrk Lua script per read path, each request a random user.

`targets` writes the scripts: ``healthz`` (the floor), ``discovery`` (one
user, the browser key in ``?key=`` as an EventSource or a page sends it),
``ofrep`` (one flag) and ``ofrep_bulk`` (every flag; both with the browser
key as a bearer token, the user in the JSON body), ``routing_304`` (an SDK
polling with the sdk key and the ETag of the last answer it got, as
`coalmine.sdk` does: a 304 until the release moves, then one 200 with the new
ETag) and ``routing`` (the same without If-None-Match: every answer the full
snapshot). The routing scripts count their 304 and 200 answers and print
them when wrk ends (`statuses`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from _readpath_plane import APP, FUNCTION

__all__ = ["USERS", "Target", "statuses", "targets"]

USERS = 100_000

_COMMON = """\
-- bench/readpath.py: {name}
local users = {users}
local host = ""
math.randomseed(12345)
local threads = {{}}
n200, n304 = 0, 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  host = wrk.headers["Host"]
end

function done(summary, latency, requests)
  local a, b = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("n200")
    b = b + t:get("n304")
  end
  io.write(string.format("readpath statuses: 200=%d 304=%d\\n", a, b))
end
"""

_GET = """
function request()
  return "GET {path}" .. math.random(0, users - 1) .. " HTTP/1.1\\r\\nHost: " .. host .. "\\r\\n\\r\\n"
end
"""

_PLAIN_GET = """
function request()
  return "GET {path} HTTP/1.1\\r\\nHost: " .. host .. "\\r\\n{headers}\\r\\n"
end
"""

_POST = """
function request()
  local body = '{{"context":{{"targetingKey":"user-' .. math.random(0, users - 1) .. '"}}}}'
  return "POST {path} HTTP/1.1\\r\\nHost: " .. host
    .. "\\r\\nAuthorization: Bearer {key}\\r\\nContent-Type: application/json\\r\\nContent-Length: "
    .. #body .. "\\r\\n\\r\\n" .. body
end
"""

_POLL = """
local etag = nil

function request()
  local head = "GET {path} HTTP/1.1\\r\\nHost: " .. host .. "\\r\\nAuthorization: Bearer {key}\\r\\n"
  if etag then
    return head .. "If-None-Match: " .. etag .. "\\r\\n\\r\\n"
  end
  return head .. "\\r\\n"
end

function response(status, headers, body)
  if status == 304 then
    n304 = n304 + 1
  elseif status == 200 then
    n200 = n200 + 1
    etag = headers["etag"] or headers["ETag"]
  end
end
"""

_COUNT = """
function response(status, headers, body)
  if status == 304 then n304 = n304 + 1 elseif status == 200 then n200 = n200 + 1 end
end
"""


@dataclass(frozen=True)
class Target:
    key: str
    """the name in the JSON line: ``healthz``, ``discovery``, ``ofrep``, ..."""
    title: str
    script: Path


def targets(folder: Path, browser: str, sdk: str) -> list[Target]:
    """The read paths and the floor, with their scripts written into ``folder``."""
    routing = f"/v1/apps/{APP}/routing"
    bodies = {
        "healthz": ("GET /healthz (the floor)", _PLAIN_GET.format(path="/healthz", headers="")),
        "discovery": (
            "GET /v1/discovery",
            _GET.format(path=f"/v1/discovery?app={APP}&key={browser}&user=user-"),
        ),
        "ofrep": (
            "POST OFREP flag",
            _POST.format(path=f"/ofrep/v1/evaluate/flags/{APP}.{FUNCTION}", key=browser),
        ),
        "ofrep_bulk": (
            "POST OFREP flags (bulk)",
            _POST.format(path="/ofrep/v1/evaluate/flags", key=browser),
        ),
        "routing_304": ("GET routing, If-None-Match", _POLL.format(path=routing, key=sdk)),
        "routing": (
            "GET routing (full answer)",
            _PLAIN_GET.format(path=routing, headers=f"Authorization: Bearer {sdk}\\r\\n") + _COUNT,
        ),
    }
    out = []
    for key, (title, body) in bodies.items():
        script = folder / f"{key}.lua"
        script.write_text(_COMMON.format(name=title, users=USERS) + body)
        out.append(Target(key, title, script))
    return out


_STATUSES = re.compile(r"^readpath statuses: 200=(\d+) 304=(\d+)$", re.MULTILINE)


def statuses(output: str) -> tuple[int, int]:
    """(200s, 304s) a routing script counted; (0, 0) for the others."""
    found = _STATUSES.search(output)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)
