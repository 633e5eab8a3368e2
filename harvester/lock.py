"""One writer per lake: a lock file (``state.LOCK``) that a second run refuses to ignore.

Two harvests (or a harvest and a refresh) writing one lake at once would overwrite each
other's files and markers. The lock names its holder (host, pid, command) and carries a
heartbeat renewed every minute. A lock is stale, and is taken over, when its process is
gone on this host, or when its heartbeat is older than ``STALE_AFTER`` (another host that
crashed). A run killed with SIGKILL therefore never blocks the next one on the same
machine. On S3 the check-then-write is not atomic; the lock guards against the common
mistake (a second cron job, a second terminal), not against two runs started within the
same few milliseconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from harvester.errors import LakeError
from harvester.lake import Lake
from harvester.state import LOCK, HarvestState, LockRecord

HEARTBEAT_SECONDS = 60.0
STALE_AFTER = dt.timedelta(minutes=10)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(holder: LockRecord, now: dt.datetime | None = None) -> bool:
    if holder.host == socket.gethostname():
        return holder.pid == os.getpid() or not _pid_alive(int(holder.pid))
    try:
        beat = dt.datetime.fromisoformat(holder.heartbeat)
    except ValueError:
        return True
    return (now or _now()) - beat > STALE_AFTER


class LakeLock:
    def __init__(self, lake: Lake, command: str) -> None:
        self._state = HarvestState(lake)
        self._lake = lake
        self._command = command
        self._started = ""

    def holder(self) -> LockRecord | None:
        return self._state.load_lock()

    def _write(self) -> None:
        record = LockRecord(
            socket.gethostname(), os.getpid(), self._command, self._started, _now().isoformat()
        )
        self._state.save_lock(record)

    def acquire(self) -> None:
        holder = self.holder()
        if holder is not None and not is_stale(holder):
            raise LakeError(
                f"{self._lake.uri} is in use by `harvester {holder.command}` (pid"
                f" {holder.pid} on {holder.host}, since {holder.started_at});"
                f" wait for it to finish, or delete {LOCK} if that run is gone"
            )
        self._started = _now().isoformat()
        self._write()

    def beat(self) -> None:
        self._write()

    def release(self) -> None:
        holder = self.holder()
        if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
            self._state.delete_lock()


@asynccontextmanager
async def holding(lake: Lake, command: str) -> AsyncIterator[None]:
    """Hold the lake's lock for the body, renewing the heartbeat in the background."""
    lock = LakeLock(lake, command)
    await asyncio.to_thread(lock.acquire)

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await asyncio.to_thread(lock.beat)

    task = asyncio.create_task(heartbeat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(lock.release)
