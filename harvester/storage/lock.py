"""One writer per lake: a lock that fences (``state.LOCK``).

Two harvests (or a harvest and a refresh) writing one lake at once would overwrite each
other's files and markers. The lock names its holder (host, pid, command), carries a random
``token`` that only its holder knows, and a heartbeat renewed every ``HEARTBEAT_SECONDS``.

**Taking it is atomic.** The lock file is only ever changed by an operation that fails when
someone else changed it first, so of two runs racing for it exactly one wins:

- local disk: a new lock is created whole (temp file, fsync) and linked into place with
  ``os.link``, which fails when the name exists (an exclusive create that never shows a
  partial file). Replacing or removing a lock (a takeover, a heartbeat, a release) reads
  it and compares under ``flock`` on its directory, so of two changers one compares and
  changes at a time (the kernel drops the flock of a changer that dies). A replacement is
  renamed over the old record (its temp file fsynced first), so a held lock's file is
  never absent: a read that finds none is a free lock (``LocalSlot``).
- S3: conditional writes (botocore's documented ``IfNoneMatch``/``IfMatch``, on a client
  built from the lake's own storage options: ``backends.S3Slot``). A new lock is
  ``PutObject`` with ``If-None-Match: *``; a takeover, a heartbeat or a release is
  ``PutObject``/``DeleteObject`` with ``If-Match`` on the ETag that was read. A store that
  does not support them (answers ``NotImplemented``) gets plain writes, with a warning;
  there, and on every S3 store, the winner is confirmed by reading the lock back after
  ``S3_SETTLE_SECONDS`` and comparing tokens, which settles races between writes less than
  that far apart but not a write delayed by more.

**It is taken over only when stale:** its process is gone (checked only when the holder
ran in this very process space: same host name, same boot id, same PID namespace; two
containers with one host name and PID 1 in both are not the same space), or its heartbeat
is older than ``STALE_AFTER``. A run killed on this machine never blocks the next one; a
holder elsewhere is trusted until its heartbeat is old.

**It fences.** ``holding`` hands the lock's ``check`` to the lake handle as its fence
(``Lake.fence``): before every write, publish and delete through that handle or any child of
it (a commit record, a data file, a quarantine file, a page checkpoint, a deletion), the
lock file is read again and its token compared with ours. A heartbeat renews the lock only
if it is still ours. A run whose lock was taken (or deleted) raises ``LockLost`` at its next
write or heartbeat, whichever comes first, and writes nothing more. What remains is the
time between one check and the write it guards (one local rename, or one S3 PUT). The
lock's own changes go through its slot (``Lake.lock_slot``), not the fenced handle: the
fence reads that very file, and a takeover or a heartbeat must change it conditionally, not
merely while it is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from harvester.errors import LakeError, LockLost
from harvester.storage.state import LOCK, HarvestState, LockRecord
from harvester.storage.store import Lake

log = logging.getLogger("harvester.storage.lock")

HEARTBEAT_SECONDS = 60.0
STALE_AFTER = dt.timedelta(minutes=10)
# S3: how long after writing the lock it is read back to confirm the writer won.
S3_SETTLE_SECONDS = 0.5
_ATTEMPTS = 8  # acquisition rounds before giving up on a lock that keeps changing
_held: set[str] = set()  # the tokens of the locks this process holds now


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- who holds it, and whether they still live ----------------------------------------------
def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


@functools.cache
def process_space() -> tuple[str, str, str]:
    """(host name, boot id, PID namespace) of this process: where its pids mean something.

    On a system without ``/proc`` (macOS) the last two are empty and only the host name
    tells; on Linux a container gets a PID namespace of its own even under a shared name."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return socket.gethostname(), _read_text("/proc/sys/kernel/random/boot_id"), namespace


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _same_space(holder: LockRecord) -> bool:
    return (holder.host, holder.boot_id, holder.pid_ns) == process_space()


def is_stale(holder: LockRecord, now: dt.datetime | None = None) -> bool:
    """True when the holder is gone: its pid is dead (or is ours) in our own process space,
    or, anywhere else, its heartbeat is older than ``STALE_AFTER``."""
    if _same_space(holder):
        if holder.pid == os.getpid():  # this process: held iff one of its locks has it
            return holder.token not in _held
        return not _pid_alive(int(holder.pid))
    try:
        beat = dt.datetime.fromisoformat(holder.heartbeat)
    except ValueError:
        return True
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=dt.UTC)
    return (now or _now()) - beat > STALE_AFTER


# -- the lock --------------------------------------------------------------------------------
class LakeLock:
    """The lake's lock for one run: ``acquire``, ``beat``, ``check`` (the fence), ``release``."""

    def __init__(self, lake: Lake, command: str) -> None:
        self._lake = lake
        self._command = command
        # The lock file as the lake's backend changes it atomically (``backends``). Its
        # writes are the one kind that skips the lake's fence: the fence reads this file.
        self._slot = lake.lock_slot(LOCK, S3_SETTLE_SECONDS)
        self.token = secrets.token_hex(16)
        self._record: LockRecord | None = None
        self._lost: LockLost | None = None
        self._mutex = threading.Lock()  # one change or check of the lock at a time

    def holder(self) -> LockRecord | None:
        found = self._slot.read()
        return None if found is None else LockRecord.parse(found[0])

    @property
    def lost(self) -> bool:
        return self._lost is not None

    def _new_record(self) -> LockRecord:
        host, boot_id, namespace = process_space()
        now = _now().isoformat()
        started = self._record.started_at if self._record is not None else now
        return LockRecord(
            host, os.getpid(), self._command, started, now, self.token, boot_id, namespace
        )

    def _in_use(self, holder: LockRecord) -> LakeError:
        return LakeError(
            f"{self._lake.uri} is in use by `harvester {holder.command}` (pid"
            f" {holder.pid} on {holder.host}, since {holder.started_at});"
            f" wait for it to finish, or delete {LOCK} if that run is gone"
        )

    def acquire(self) -> None:
        """Take the lock, or raise ``LakeError`` naming the live holder."""
        with self._mutex:
            self._slot.clean(STALE_AFTER.total_seconds())
            for _ in range(_ATTEMPTS):
                found = self._slot.read()
                record = self._new_record()
                data = record.to_bytes()
                if found is None:
                    won = self._slot.create(data)
                else:
                    raw, version = found
                    holder = LockRecord.parse(raw)  # None: torn or foreign, taken over
                    if holder is not None and not is_stale(holder):
                        raise self._in_use(holder)
                    if holder is not None:
                        log.warning(
                            "taking over the stale lock of `harvester %s` (pid %s on %s,"
                            " heartbeat %s)",
                            holder.command,
                            holder.pid,
                            holder.host,
                            holder.heartbeat,
                        )
                    won = self._slot.replace(version, data)
                if not won:
                    continue
                if self._slot.settle:
                    time.sleep(self._slot.settle)
                confirmed = self._slot.read()
                if confirmed is not None and LockRecord.parse(confirmed[0]) == record:
                    self._record = record
                    _held.add(self.token)
                    return
            holder = self.holder()
            if holder is not None:
                raise self._in_use(holder)
            raise LakeError(f"{self._lake.uri}: could not take {LOCK}, it kept changing")

    def _lose(self, holder: LockRecord | None) -> LockLost:
        if self._lost is None:
            whom = (
                f" ({LOCK} was removed)"
                if holder is None
                else f" to `harvester {holder.command}` (pid {holder.pid} on {holder.host})"
            )
            self._lost = LockLost(
                f"{self._lake.uri}: this `harvester {self._command}` lost its lock{whom}:"
                " stopping before writing"
            )
            _held.discard(self.token)
        return self._lost

    def _current(self) -> tuple[LockRecord | None, Any]:
        found = self._slot.read()
        if found is None:
            return None, None
        return LockRecord.parse(found[0]), found[1]

    def check(self) -> None:
        """The fence: raise ``LockLost`` unless the lock file still carries our token."""
        with self._mutex:
            if self._lost is None:
                holder, _ = self._current()
                if holder is not None and holder.token == self.token:
                    return
                self._lose(holder)
            assert self._lost is not None
            raise self._lost

    def beat(self) -> bool:
        """Renew the heartbeat if the lock is still ours; False once it is lost."""
        with self._mutex:
            if self._lost is not None or self._record is None:
                return False
            holder, version = self._current()
            if holder is None or holder.token != self.token:
                self._lose(holder)
                return False
            record = self._new_record()
            if not self._slot.replace(version, record.to_bytes()):
                self._lose(self._current()[0])
                return False
            self._record = record
            return True

    def release(self) -> None:
        """Delete the lock if it is still ours (a lost lock belongs to someone else)."""
        with self._mutex:
            if self._lost is not None or self._record is None:
                return
            holder, version = self._current()
            if holder is not None and holder.token == self.token:
                self._slot.remove(version)
            self._record = None
            _held.discard(self.token)


def _beat(lock: LakeLock) -> bool:
    """One heartbeat; a storage error is logged and the next beat tries again (the lock
    turns stale only after ``STALE_AFTER`` without one)."""
    try:
        return lock.beat()
    except OSError as exc:
        log.warning("could not renew the lake's lock (will retry): %s", exc)
        return True


@asynccontextmanager
async def holding(state: HarvestState, command: str) -> AsyncIterator[LakeLock]:
    """Hold the lake's lock for the body: fence ``state``'s lake (and so every child of it,
    the staging areas) with it,
    renew the heartbeat in the background, and stop the body once the lock is lost."""
    lock = LakeLock(state.lake, command)
    await asyncio.to_thread(lock.acquire)
    body = asyncio.current_task()
    stopped = False

    async def heartbeat() -> None:
        nonlocal stopped
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if not await asyncio.to_thread(_beat, lock):
                if body is not None:
                    stopped = True
                    body.cancel()
                return

    previous = state.lake.fence
    state.lake.fence = lock.check
    task = asyncio.create_task(heartbeat())
    try:
        yield lock
    except asyncio.CancelledError:
        if stopped:
            lock.check()  # raises LockLost: the reason the body was stopped
        raise
    finally:
        if stopped and body is not None:
            body.uncancel()
        state.lake.fence = previous
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(lock.release)


@contextlib.contextmanager
def holding_sync(state: HarvestState, command: str) -> Iterator[LakeLock]:
    """``holding`` for synchronous commands (compact): the heartbeat runs in a thread, and
    a lost lock stops the body at its next fenced write."""
    lock = LakeLock(state.lake, command)
    lock.acquire()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            if not _beat(lock):
                return

    previous = state.lake.fence
    state.lake.fence = lock.check
    thread = threading.Thread(target=heartbeat, name="lake-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield lock
    finally:
        state.lake.fence = previous
        done.set()
        thread.join()
        lock.release()
