"""The ``/_sim/*`` routes (only with ``--admin``): mutate the index, read its truth, count,
start a new quota week, change the faults of the API routes from now on.

They sit outside the gate of the API endpoints: no key, no rate limit, never a fault, so a
test can always observe and steer the simulator however hostile it is to the harvester.
The truth and the mutations share a lock, so a truth stream is one consistent snapshot.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from harvester.sim.mutate import MutationError, MutationSpec
from harvester.sim.server import STATE, SimState

MUTATE_PATH = "/_sim/mutate"
TRUTH_PATH = "/_sim/truth"
STATS_PATH = "/_sim/stats"
QUOTA_RESET_PATH = "/_sim/quota-reset"
FAULTS_PATH = "/_sim/faults"


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


async def mutate(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        spec = MutationSpec.from_json(orjson.loads(await request.read() or b"{}"))
        async with state.admin_lock:
            summary = state.mutator.apply(spec)
    except (orjson.JSONDecodeError, MutationError) as exc:
        return _json({"error": f"bad mutation request: {exc}"}, status=400)
    return _json(summary)


async def truth(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    async with state.admin_lock:
        for chunk in state.corpus.truth_chunks():
            await response.write(chunk)
    await response.write_eof()
    return response


def stats_payload(state: SimState) -> dict[str, Any]:
    stats = state.stats
    return {
        "requests": stats.requests,
        "counts": stats.counts,
        "pages": stats.pages,
        "rows_served": stats.rows_served,
        "statuses": {str(code): n for code, n in sorted(stats.statuses.items())},
        "faults": dict(sorted(state.faults.injected.items())),
        "throttled": stats.throttled,
        "throttled_by": dict(sorted(stats.throttled_by.items())),
        "retry_after": dict(sorted(stats.retry_after.items())),
        "mutations": state.mutator.calls,
        "version": state.corpus.version,
        "numFound": state.corpus.total,
        "clock": f"{state.mutator.clock.isoformat()}T00:00:00",
        "quota_used": sum(state.quota.used.values()),  # by every key (keys stay unnamed)
        **state.corpus.cache_info(),
    }


async def stats(request: web.Request) -> web.Response:
    return _json(stats_payload(request.app[STATE]))


async def quota_reset(request: web.Request) -> web.Response:
    """The simulator's "Sunday 00:00 UTC": every key's weekly quota (``--weekly-quota``)
    starts again."""
    return _json({"reset": request.app[STATE].quota.reset()})


async def faults(request: web.Request) -> web.Response:
    """``{"rate": R, "kinds": [...]}``: from now on a share ``R`` of API requests is faulted
    with those kinds (``{"rate": 0}``: none), so a test can make one run meet, say, spurious
    empty answers and the next run not."""
    body = orjson.loads(await request.read() or b"{}")
    try:
        request.app[STATE].faults.configure(float(body.get("rate", 0)), body.get("kinds"))
    except (TypeError, ValueError) as exc:
        return _json({"error": f"bad faults request: {exc}"}, status=400)
    return _json({"rate": request.app[STATE].faults.rate})


def add_admin_routes(app: web.Application) -> None:
    app.router.add_post(FAULTS_PATH, faults)
    app.router.add_post(MUTATE_PATH, mutate)
    app.router.add_get(TRUTH_PATH, truth)
    app.router.add_get(STATS_PATH, stats)
    app.router.add_post(QUOTA_RESET_PATH, quota_reset)
