"""A long outage, as the public sources report them: ``503`` with an empty body, for long spans.

``--outage-after N --outage-seconds S``: the first N API requests are served; the next one
begins an outage of S seconds (one per run). ``--outage-kind 503`` answers every API request
in it with ``503`` and no body; ``refuse`` closes the listening socket (new connections are
refused, requests on open keep-alive connections are reset) and listens again on the same
port when it ends, as a host that went down and came back would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiohttp import web

UP, BEGINS, DOWN = "up", "begins", "down"


class Outage:
    """When the outage is: decided by the count of API requests, timed by a monotonic clock."""

    def __init__(self, after: int, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.after = after  # 0 = never
        self.seconds = seconds
        self.clock = clock
        self.began: float | None = None

    def state(self, requests: int) -> str:
        """``UP``, ``BEGINS`` (this request starts it) or ``DOWN`` for the ``requests``-th
        API request."""
        if not self.after:
            return UP
        if self.began is None:
            if requests <= self.after:
                return UP
            self.began = self.clock()
            return BEGINS
        return DOWN if self.clock() < self.began + self.seconds else UP


class Listener:
    """The server's listening socket, which a ``refuse`` outage closes and reopens."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite, host: str, port: int) -> None:
        self.runner = runner
        self.site: web.TCPSite | None = site
        self.host = host
        self.port = port  # the bound port: reopening on it keeps the client's URL valid
        self._reopen: asyncio.Task[None] | None = None

    async def refuse_for(self, seconds: float) -> None:
        """Stop listening now; listen again on the same port after ``seconds``."""
        if self.site is not None:
            await self.site.stop()  # closes the listening socket only; connections stay
            self.site = None
        self._reopen = asyncio.get_running_loop().create_task(self._listen_after(seconds))

    async def _listen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.runner.server is None:  # cleaned up meanwhile
            return
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        self.site = site

    async def close(self) -> None:
        """Cancel a pending reopen (the runner is being cleaned up)."""
        if self._reopen is not None:
            self._reopen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopen
