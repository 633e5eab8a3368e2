"""One writer per lake: a lock that fences (``state.LOCK``).

Two harvests (or a harvest and a refresh) writing one lake at once would overwrite each
other's files and markers. The lock names its holder (host, pid, command), carries a random
``token`` that only its holder knows, and a heartbeat renewed every ``HEARTBEAT_SECONDS``.

**Taking it is atomic.** The lock file is only ever changed by an operation that fails when
someone else changed it first, so of two runs racing for it exactly one wins:

- local disk: a new lock is created whole (temp file, fsync) and linked into place with
  ``os.link``, which fails when the name exists (an exclusive create that never shows a
  partial file). Replacing or removing a lock (a takeover, a heartbeat, a release) first
  renames the current file away to a name of its own: only one rename of a file can
  succeed, the winner reads what it took away, and puts it back untouched if it is not the
  record it meant to replace.
- S3: conditional writes. A new lock is ``PutObject`` with ``If-None-Match: *``; a
  takeover, a heartbeat or a release is ``PutObject``/``DeleteObject`` with ``If-Match`` on
  the ETag that was read. A store that does not support them (answers ``NotImplemented``)
  gets plain writes, with a warning; there, and on every S3 store, the winner is confirmed
  by reading the lock back after ``S3_SETTLE_SECONDS`` and comparing tokens, which settles
  races between writes less than that far apart but not a write delayed by more.

**It is taken over only when stale:** its process is gone (checked only when the holder
ran in this very process space: same host name, same boot id, same PID namespace; two
containers with one host name and PID 1 in both are not the same space), or its heartbeat
is older than ``STALE_AFTER``. A run killed on this machine never blocks the next one; a
holder elsewhere is trusted until its heartbeat is old.

**It fences.** ``holding`` hands the lock's ``check`` to the ``HarvestState`` as its fence:
before every commit record (a shard marker, a partition manifest, completion, watermark,
a refresh checkpoint) and before a shard's or partition's data files are written, the lock
file is read again and its token compared with ours. A heartbeat renews the lock only if it
is still ours. A run whose lock was taken (or deleted) raises ``LockLost`` at its next
commit or heartbeat, whichever comes first, and writes nothing more. What remains is the
time between one check and the write it guards (one local rename, or one S3 PUT).
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
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import fsspec.asyn

from harvester.errors import LakeError, LockLost
from harvester.lake.state import LOCK, HarvestState, LockRecord
from harvester.lake.store import Lake, fsync_dir

log = logging.getLogger("harvester.lake.lock")

HEARTBEAT_SECONDS = 60.0
STALE_AFTER = dt.timedelta(minutes=10)
# S3: how long after writing the lock it is read back to confirm the writer won.
S3_SETTLE_SECONDS = 0.5
_ATTEMPTS = 8  # acquisition rounds before giving up on a lock that keeps changing
_ASIDE = ".aside-"  # a lock file renamed away (local): ``.lock.json.aside-<uuid32>``
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


# -- the lock file, changed only by operations that fail when someone changed it first -------
class _Slot(Protocol):
    settle: float  # seconds to wait before reading a won lock back to confirm it

    def read(self) -> tuple[bytes, Any] | None:
        """The lock's bytes and a version to make a change conditional on; None if absent."""

    def create(self, data: bytes) -> bool:
        """Write the lock if there is none; False when there is one."""

    def replace(self, version: Any, data: bytes) -> bool:
        """Write the lock if it is still ``version``; False when it changed."""

    def remove(self, version: Any) -> bool:
        """Delete the lock if it is still ``version``; False when it changed."""


class _LocalSlot:
    """Exclusive create by ``os.link``; replace and remove by renaming the file away first."""

    def __init__(self, lake: Lake) -> None:
        self.settle = 0.0
        self.path = lake.full_path(LOCK)
        self.directory, self.name = os.path.split(self.path)

    def _aside(self) -> str:
        # Not the lake's temp-file form: a sweep running meanwhile must not remove it.
        return os.path.join(self.directory, f".{self.name}{_ASIDE}{uuid.uuid4().hex}")

    def clean(self) -> None:
        """Remove files renamed aside by runs killed mid-change (older than STALE_AFTER)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.directory):
                if name.startswith(f".{self.name}{_ASIDE}"):
                    path = os.path.join(self.directory, name)
                    with contextlib.suppress(FileNotFoundError):
                        age = time.time() - os.stat(path).st_mtime
                        if age > STALE_AFTER.total_seconds():
                            os.unlink(path)

    def read(self) -> tuple[bytes, Any] | None:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        return data, data

    def create(self, data: bytes) -> bool:
        os.makedirs(self.directory, exist_ok=True)
        temp = self._aside()
        try:
            with open(temp, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temp, self.path)  # fails if the name exists: an exclusive create
            except FileExistsError:
                return False
            fsync_dir(self.directory)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return True

    def _take(self, version: Any) -> str | None:
        """Rename the lock away if it is ``version``: the path it now has, else None (and
        whatever was taken by mistake is put back, unless a new lock took its place)."""
        aside = self._aside()
        try:
            os.rename(self.path, aside)  # of two renames of one file, one succeeds
        except FileNotFoundError:
            return None
        with open(aside, "rb") as handle:
            taken = handle.read()
        if taken == version:
            return aside
        with contextlib.suppress(FileExistsError):
            os.link(aside, self.path)
        os.unlink(aside)
        return None

    def replace(self, version: Any, data: bytes) -> bool:
        aside = self._take(version)
        if aside is None:
            return False
        try:
            return self.create(data)
        finally:
            os.unlink(aside)

    def remove(self, version: Any) -> bool:
        aside = self._take(version)
        if aside is None:
            return False
        os.unlink(aside)
        return True


def _s3_code(exc: BaseException) -> str:
    """The S3 error code behind an s3fs exception ("" when there is none)."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
        seen = seen.__cause__ or seen.__context__
    return ""


_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}
_UNSUPPORTED = {"NotImplemented", "InvalidArgument", "InvalidRequest"}


class _S3Slot:
    """Conditional requests on the ETag; plain ones where the store refuses them."""

    def __init__(self, lake: Lake) -> None:
        self.fs = lake.fs
        self.bucket, _, self.key = lake.full_path(LOCK).partition("/")
        self.conditional = True
        self.settle = S3_SETTLE_SECONDS

    def _call(self, method: str, **kwargs: Any) -> Any:
        return self.fs.call_s3(method, Bucket=self.bucket, Key=self.key, **kwargs)

    def read(self) -> tuple[bytes, Any] | None:
        async def get() -> tuple[bytes, str]:
            out = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            async with out["Body"] as body:
                data: bytes = await body.read()
            return data, str(out["ETag"])

        try:
            found: tuple[bytes, str] = fsspec.asyn.sync(self.fs.loop, get)
        except FileNotFoundError:
            return None
        return found

    def _conditional(self, method: str, condition: dict[str, str], **kwargs: Any) -> bool:
        """One conditional request: True done, False the condition failed. A store that
        refuses conditions gets the plain request from then on (the documented limit)."""
        if self.conditional:
            try:
                self._call(method, **condition, **kwargs)
                return True
            except OSError as exc:
                code = _s3_code(exc)
                if code in _LOST_RACE or isinstance(exc, FileExistsError | FileNotFoundError):
                    return False
                if code not in _UNSUPPORTED:
                    raise
                log.warning(
                    "this S3 store refuses conditional writes (%s): the lake's lock falls back"
                    " to write, wait %.1fs, read back",
                    code,
                    self.settle,
                )
                self.conditional = False
        self._call(method, **kwargs)
        return True

    def create(self, data: bytes) -> bool:
        if not self.conditional and self.read() is not None:
            return False
        return self._conditional("put_object", {"IfNoneMatch": "*"}, Body=data)

    def replace(self, version: Any, data: bytes) -> bool:
        if not self.conditional and self._changed(version):
            return False
        return self._conditional("put_object", {"IfMatch": str(version)}, Body=data)

    def remove(self, version: Any) -> bool:
        if not self.conditional and self._changed(version):
            return False
        return self._conditional("delete_object", {"IfMatch": str(version)})

    def _changed(self, version: Any) -> bool:
        found = self.read()
        return found is None or found[1] != version


# -- the lock --------------------------------------------------------------------------------
class LakeLock:
    """The lake's lock for one run: ``acquire``, ``beat``, ``check`` (the fence), ``release``."""

    def __init__(self, lake: Lake, command: str) -> None:
        self._lake = lake
        self._command = command
        self._slot: _Slot = _LocalSlot(lake) if lake.is_local else _S3Slot(lake)
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
            if isinstance(self._slot, _LocalSlot):
                self._slot.clean()
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
    """Hold the lake's lock for the body: fence ``state`` (and its staging areas) with it,
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

    previous = state.fence
    state.fence = lock.check
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
        state.fence = previous
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

    previous = state.fence
    state.fence = lock.check
    thread = threading.Thread(target=heartbeat, name="lake-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield lock
    finally:
        state.fence = previous
        done.set()
        thread.join()
        lock.release()
