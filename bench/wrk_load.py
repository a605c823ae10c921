"""Closed-loop HTTP load with ``wrk`` (C, one thread, keep-alive; Debian package ``wrk``): the
load generator every serving benchmark uses, so the client costs little of the 2 cores.

Requests are built by a generated Lua script from a seeded list of (customer, app) pairs; the
script counts non-200 answers and degraded answers and prints one JSON line at the end.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

_LUA = r"""
local pairs_ = { %(pairs)s }
local keys = { rib = "demo-rib-key", cib = "demo-cib-key", nli = "demo-nli-key",
               imobile = "demo-imobile-key" }
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  next_ = 1; non200 = 0; degraded = 0
end
function request()
  local p = pairs_[next_]
  next_ = next_ %% #pairs_ + 1
  local body = string.format('{"customer_id":%%d,"app":"%%s"}', p[1], p[2])
  return wrk.format("POST", "/v1/recommendations",
    { ["Content-Type"] = "application/json", ["X-API-Key"] = keys[p[2]] }, body)
end
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1
  elseif string.find(body, '"degraded":true', 1, true) then degraded = degraded + 1 end
end
function done(summary, latency, requests)
  local n, d = 0, 0
  for _, t in ipairs(threads) do n = n + t:get("non200"); d = d + t:get("degraded") end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_s":%%.3f,"p50_ms":%%.3f,"p90_ms":%%.3f,"p99_ms":%%.3f,' ..
    '"max_ms":%%.3f,"mean_ms":%%.3f,"non200":%%d,"degraded":%%d,"socket_errors":%%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    latency.mean / 1e3, n, d, e.connect + e.read + e.write + e.timeout))
end
"""


# Recommendations, with every EVERY-th request an event batch (impressions and clicks, unique
# event ids). Counts acknowledged events from the answers' "accepted" field.
_MIXED_LUA = r"""
local pairs_ = { %(pairs)s }
local products = { %(products)s }
local keys = { rib = "demo-rib-key", cib = "demo-cib-key", nli = "demo-nli-key",
               imobile = "demo-imobile-key" }
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  next_ = 1; sent = 0; non200 = 0; degraded = 0; acked = 0; event_posts = 0; recommended = 0
  acked_file = io.open("%(acked_path)s", "a")
  acked_file:setvbuf("line")
end
function request()
  local p = pairs_[next_]
  next_ = next_ %% #pairs_ + 1
  sent = sent + 1
  local headers = { ["Content-Type"] = "application/json", ["X-API-Key"] = keys[p[2]] }
  if sent %% %(every)d == 0 then
    local parts = {}
    for i = 1, %(batch)d do
      local kind = "impression"
      if i %% 5 == 0 then kind = "click" end
      parts[i] = string.format(
        '{"event_id":"%(run)s-%%d-%%d","customer_id":%%d,"app":"%%s","event_type":"%%s","product_id":"%%s"}',
        sent, i, p[1], p[2], kind, products[(sent + i) %% #products + 1])
    end
    return wrk.format("POST", "/v1/events", headers, '{"events":[' .. table.concat(parts, ",") .. ']}')
  end
  local body = string.format('{"customer_id":%%d,"app":"%%s"}', p[1], p[2])
  return wrk.format("POST", "/v1/recommendations", headers, body)
end
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 return end
  local accepted = string.match(body, '"accepted":(%%d+)')
  if accepted then
    acked = acked + tonumber(accepted); event_posts = event_posts + 1
    acked_file:write(string.match(body, '"event_ids":(%%b[])'), "\n")
  else
    recommended = recommended + 1
    if string.find(body, '"degraded":true', 1, true) then degraded = degraded + 1 end
  end
end
function done(summary, latency, requests)
  local n, d, a, e_, r = 0, 0, 0, 0, 0
  for _, t in ipairs(threads) do
    n = n + t:get("non200"); d = d + t:get("degraded"); a = a + t:get("acked")
    e_ = e_ + t:get("event_posts"); r = r + t:get("recommended")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_s":%%.3f,"p50_ms":%%.3f,"p90_ms":%%.3f,"p99_ms":%%.3f,' ..
    '"max_ms":%%.3f,"mean_ms":%%.3f,"non200":%%d,"degraded":%%d,"socket_errors":%%d,' ..
    '"events_acked":%%d,"event_posts":%%d,"recommendations":%%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    latency.mean / 1e3, n, d, e.connect + e.read + e.write + e.timeout, a, e_, r))
end
"""


def write_mixed_script(
    path: Path,
    customers: list[tuple[int, str]],
    products: list[str],
    seed: int,
    run: str,
    acked_path: Path,
    every: int = 5,
    batch: int = 10,
    n: int = 20_000,
) -> Path:
    """Like :func:`write_script`, with every ``every``-th request a batch of ``batch`` events
    whose ids start with ``run``; the ids of every acknowledged batch are appended to
    ``acked_path`` (one JSON list a line), so the event log can be checked id by id."""
    rng = random.Random(seed)
    draws = [rng.choice(customers) for _ in range(n)]
    pairs = ",".join(f'{{{cid},"{app}"}}' for cid, app in draws)
    names = ",".join(f'"{p}"' for p in products)
    path.write_text(
        _MIXED_LUA
        % {
            "pairs": pairs,
            "products": names,
            "every": every,
            "batch": batch,
            "run": run,
            "acked_path": acked_path,
        }
    )
    return path


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def write_script(path: Path, customers: list[tuple[int, str]], seed: int, n: int = 20_000) -> Path:
    """A Lua script cycling through ``n`` seeded (customer, app) draws."""
    rng = random.Random(seed)
    draws = [rng.choice(customers) for _ in range(n)]
    pairs = ",".join(f'{{{cid},"{app}"}}' for cid, app in draws)
    path.write_text(_LUA % {"pairs": pairs})
    return path


def run_wrk(url: str, script: Path, connections: int, duration_s: float) -> dict[str, Any]:
    """One closed-loop level: ``connections`` keep-alive clients for ``duration_s``."""
    if not wrk_available():
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    result = json.loads(line.removeprefix("WRK_JSON "))
    result["clients"] = connections
    result["req_per_s"] = round(result["requests"] / result["duration_s"], 1)
    return result
