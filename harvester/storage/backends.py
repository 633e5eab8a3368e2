"""The lake's two storage backends: local disk and S3, each whole in one class.

A ``Lake`` (``store``) holds one backend and asks it for everything that differs between
the two; nothing else in the package branches on local versus S3. Each backend supplies:

- **byte I/O** on full paths (in the filesystem's own terms): whole-file atomic writes,
  hidden writes and their publishing, reads, listings, deletes, and the preflight;
- **the lock slot** (``LockSlot``): the one file ``lock`` changes only by operations that
  fail when someone changed it first (local: ``os.link`` and renames aside; S3: conditional
  ``PutObject``/``DeleteObject`` on the ETag, through botocore's documented ``IfNoneMatch``
  and ``IfMatch``, never s3fs's private coroutines);
- **the page store** (``checkpoint``): an append-only log per shard locally, one object per
  page on S3 (which cannot append).

How a write is made atomic per backend, and why, is told in ``store``'s docstring. A
backend never checks the lock's fence: the ``Lake`` does, before it calls any writing
method here, so the backend stays a plain store of bytes. The one caller that writes here
without the fence is the lock itself (its slot: the fence reads that very file).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Container, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol

from harvester.errors import LakeError

if TYPE_CHECKING:
    from harvester.storage.checkpoint import PageStore
    from harvester.storage.store import Lake

# The lock's logger: what the slots report is about the lock.
log = logging.getLogger("harvester.storage.lock")

TEMP_MARK: Final = ".tmp-"
# The write probe's name: hidden from readers (a leading '.') and shaped like our temp files,
# so a listing never shows it; named so that anyone who meets a leftover knows whose it is.
PROBE_PREFIX: Final = ".harvester-write-check"
# What the credentials need on S3, named in the "access denied" message.
S3_PERMISSIONS: Final = "s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject"
# A lock file renamed away (local): ``.lock.json.aside-<uuid32>``. Not the lake's temp-file
# form, so a sweep running meanwhile never removes it.
ASIDE: Final = ".aside-"


def fsync_dir(directory: str) -> None:
    """Make a rename or a new name in ``directory`` durable (POSIX needs the directory's
    own fsync for that)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def probe_name() -> str:
    return f"{PROBE_PREFIX}{TEMP_MARK}{uuid.uuid4().hex}"


class LockSlot(Protocol):
    """The lock file, changed only by operations that fail when someone changed it first."""

    settle: float  # seconds to wait before reading a won lock back to confirm it

    def clean(self, older_than: float) -> None:
        """Remove what runs killed mid-change left beside the lock, once ``older_than``
        seconds old (the lock's staleness: no live run can still be changing it)."""

    def read(self) -> tuple[bytes, Any] | None:
        """The lock's bytes and a version to make a change conditional on; None if absent."""

    def create(self, data: bytes) -> bool:
        """Write the lock if there is none; False when there is one."""

    def replace(self, version: Any, data: bytes) -> bool:
        """Write the lock if it is still ``version``; False when it changed."""

    def remove(self, version: Any) -> bool:
        """Delete the lock if it is still ``version``; False when it changed."""


# -- local disk ---------------------------------------------------------------------------------
class LocalBackend:
    """A directory tree on local disk: temp file + fsync + ``os.replace`` for every write."""

    local = True

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def write(self, full: str, data: bytes) -> None:
        directory, name = os.path.split(full)
        os.makedirs(directory, exist_ok=True)
        temp = os.path.join(directory, f".{name}{TEMP_MARK}{uuid.uuid4().hex}")
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                # Durable before it becomes visible: after a crash the name never points at
                # a file whose blocks were not written yet.
                os.fsync(handle.fileno())
            os.replace(temp, full)
            # The rename itself is durable only once the directory is: the caller writes a
            # marker that vouches for this file right after, and it must not outlive it.
            fsync_dir(directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def write_hidden(self, full: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(full), exist_ok=True)
        try:
            with open(full, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # durable before it can become visible
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(full)
            raise

    def publish(self, source: str, target: str) -> None:
        os.replace(source, target)
        fsync_dir(os.path.dirname(target))

    def read(self, full: str) -> bytes:
        data: bytes = self.fs.cat_file(full)
        return data

    def read_many(self, fulls: list[str]) -> list[bytes]:
        return [self.read(full) for full in fulls]

    def exists(self, full: str) -> bool:
        return os.path.exists(full)

    def delete(self, full: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(full)

    def remove_empty_dirs(self, top: str) -> None:
        for directory, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):  # not empty, or already gone
                os.rmdir(directory)

    def find(self, base: str, sizes: bool) -> dict[str, int]:
        """Full path -> size (0 unless ``sizes``) of every file under ``base`` (or ``base``
        itself when it is a file)."""
        if os.path.isfile(base):
            paths = [base]
        else:
            paths = [os.path.join(d, n) for d, _, names in os.walk(base) for n in names]
        return {full: os.path.getsize(full) if sizes else 0 for full in paths}

    def example_file(self, root: str, skip: Container[str]) -> str | None:
        for directory, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
                if rel not in skip:
                    return rel
        return None

    def preflight(self, root: str, uri: str, for_write: bool) -> None:
        existing, missing = nearest_existing(root)
        if not os.path.isdir(existing):
            raise LakeError(f"cannot use {uri} as a lake: {existing} is a file, not a directory")
        if not missing:
            with os.scandir(existing) as entries:  # proves the root can be listed
                next(entries, None)
        if not for_write:
            return  # a root that does not exist yet reads as an empty lake
        made: list[str] = []
        try:
            for directory in reversed(missing):  # from the existing ancestor down
                try:
                    os.mkdir(directory)
                except OSError as exc:
                    raise LakeError(
                        f"cannot write to {uri}: cannot create the directory {directory}"
                        f" ({local_reason(exc)})"
                    ) from exc
                made.append(directory)
            probe = os.path.join(root, probe_name())
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"harvester write check\n")
            finally:
                os.close(fd)
                os.unlink(probe)
        finally:
            for directory in reversed(made):
                with contextlib.suppress(OSError):  # another process put something there
                    os.rmdir(directory)

    def lock_slot(self, full: str, settle: float) -> LockSlot:
        return LocalSlot(full)  # a link is seen at once: nothing to settle

    def page_store(self, lake: Lake, slug: str) -> PageStore:
        # checkpoint builds on the lake (it imports store, which imports this module), so
        # its classes are looked up when a store is asked for, not when this module loads.
        from harvester.storage.checkpoint import LocalPageLog

        return LocalPageLog(lake, slug)


class LocalSlot:
    """Exclusive create by ``os.link``; replace by ``os.replace`` over the lock and remove by
    ``os.unlink``, each after a compare made under ``flock`` on the lock's directory.

    A held lock's file never disappears: a heartbeat or a takeover renames its new record
    over the old one (a reader opens one or the other, never neither), so a read that finds
    no file is a free lock, with nothing to wait for. Of two changers, the directory lock
    lets one compare-and-change at a time; it is the kernel's, so a changer killed midway
    leaves nothing held. A create needs no part in it: the name exists throughout a guarded
    change, so the link fails."""

    def __init__(self, path: str) -> None:
        self.settle = 0.0
        self.path = path
        self.directory, self.name = os.path.split(path)

    def _temp(self) -> str:
        return os.path.join(self.directory, f".{self.name}{ASIDE}{uuid.uuid4().hex}")

    def clean(self, older_than: float) -> None:
        """Remove the temp records of runs killed before they linked or renamed them in
        (and the files earlier versions set aside), once ``older_than``."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.directory):
                if name.startswith(f".{self.name}{ASIDE}"):
                    path = os.path.join(self.directory, name)
                    with contextlib.suppress(FileNotFoundError):
                        if time.time() - os.stat(path).st_mtime > older_than:
                            os.unlink(path)

    def read(self) -> tuple[bytes, Any] | None:
        """The lock's bytes (its version too); None when there is no lock file."""
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        return data, data

    def _write_temp(self, data: bytes) -> str:
        os.makedirs(self.directory, exist_ok=True)
        temp = self._temp()
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return temp

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """One changer at a time: ``flock`` on the directory (no file of its own to leave
        behind); released by the kernel when the holder closes it or dies."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def create(self, data: bytes) -> bool:
        temp = self._write_temp(data)
        try:
            try:
                os.link(temp, self.path)  # fails if the name exists: an exclusive create
            except FileExistsError:
                return False
            fsync_dir(self.directory)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return True

    def replace(self, version: Any, data: bytes) -> bool:
        temp = self._write_temp(data)  # the slow part (fsync) before the guard is taken
        try:
            with self._guard():
                found = self.read()
                if found is None or found[1] != version:
                    return False
                os.replace(temp, self.path)
            fsync_dir(self.directory)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def remove(self, version: Any) -> bool:
        with contextlib.suppress(FileNotFoundError), self._guard():
            found = self.read()
            if found is None or found[1] != version:
                return False
            os.unlink(self.path)
            fsync_dir(self.directory)
            return True
        return False  # the directory itself is gone: so is the lock


# -- S3 -----------------------------------------------------------------------------------------
class S3Backend:
    """A bucket prefix through s3fs: one ``PutObject`` per write (no rename on S3 is atomic).

    Listings are never cached (``Lake.open`` turns s3fs's cache off) and every change
    invalidates what s3fs may still hold for the path, so a listing is never stale."""

    local = False

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def write(self, full: str, data: bytes) -> None:
        self.fs.pipe_file(full, data)
        self.fs.invalidate_cache(full)

    def write_hidden(self, full: str, data: bytes) -> None:
        self.write(full, data)

    def publish(self, source: str, target: str) -> None:
        self.fs.copy(source, target)  # server-side: no bytes travel again
        self.fs.rm_file(source)
        self.fs.invalidate_cache(source)
        self.fs.invalidate_cache(target)

    def read(self, full: str) -> bytes:
        data: bytes = self.fs.cat_file(full)
        return data

    def read_many(self, fulls: list[str]) -> list[bytes]:
        got: dict[str, bytes] = self.fs.cat(fulls, on_error="raise")
        return [got[self.fs._strip_protocol(f)] for f in fulls]

    def exists(self, full: str) -> bool:
        self.fs.invalidate_cache(full)
        return bool(self.fs.exists(full))

    def delete(self, full: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(full)
        self.fs.invalidate_cache(full)

    def remove_empty_dirs(self, top: str) -> None:
        pass  # S3 has no directories: a prefix is gone with its last object

    def find(self, base: str, sizes: bool) -> dict[str, int]:
        self.fs.invalidate_cache(base)
        if sizes:
            return {
                self.fs._strip_protocol(name): int(info.get("size") or 0)
                for name, info in self.fs.find(base, detail=True).items()
            }
        return dict.fromkeys((self.fs._strip_protocol(f) for f in self.fs.find(base)), 0)

    def example_file(self, root: str, skip: Container[str]) -> str | None:
        return self._example(root, root, skip)

    def _example(self, root: str, directory: str, skip: Container[str]) -> str | None:
        """One listing per level until the first file: never a listing of the whole tree."""
        try:
            entries = self.fs.ls(directory, detail=True, refresh=True)
        except FileNotFoundError:
            return None
        subdirs = []
        for entry in sorted(entries, key=lambda e: str(e["name"])):
            full = str(self.fs._strip_protocol(entry["name"])).rstrip("/")
            if entry.get("type") == "directory":
                subdirs.append(full)
                continue
            rel = full[len(root) + 1 :] if full.startswith(root + "/") else full
            if rel not in skip:
                return rel
        for sub in subdirs:
            if sub != directory and (found := self._example(root, sub, skip)) is not None:
                return found
        return None

    def preflight(self, root: str, uri: str, for_write: bool) -> None:
        bucket, _, prefix = root.partition("/")
        # One listing of at most one key: proves the credentials, the bucket and list access
        # (on the lake's own prefix, which is all an IAM policy may grant), and unlike
        # ``ls`` it tells a missing bucket from an empty prefix.
        # Through botocore, as the lock slot's requests (``S3Slot``): s3fs offers no public
        # call for this listing, and ``call_s3`` is the sync mirror of a private coroutine.
        import botocore.exceptions  # type: ignore[import-untyped]
        from s3fs.errors import translate_boto_error

        client = botocore_client(self.fs.storage_options)
        try:
            client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
        except botocore.exceptions.ClientError as exc:
            raise translate_boto_error(exc) from exc
        if not for_write:
            return
        probe = f"{root}/{probe_name()}"
        self.fs.pipe_file(probe, b"harvester write check\n")
        try:
            self.fs.rm_file(probe)
        except PermissionError as exc:
            raise LakeError(
                f"cannot delete from {uri}: {server_message(exc)} (the harvester deletes"
                f" files it replaces; allow {S3_PERMISSIONS}); the probe object"
                f" s3://{probe} is left behind: delete it"
            ) from None
        finally:
            self.fs.invalidate_cache(probe)

    def lock_slot(self, full: str, settle: float) -> LockSlot:
        return S3Slot(self.fs.storage_options, full, settle)

    def page_store(self, lake: Lake, slug: str) -> PageStore:
        # See ``LocalBackend.page_store`` for why the import is here.
        from harvester.storage.checkpoint import ObjectPageStore

        return ObjectPageStore(lake, slug)


# The S3 error codes of a condition that failed (someone changed the lock first), and of a
# store that refuses conditions altogether.
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}
_UNSUPPORTED = {"NotImplemented", "InvalidArgument", "InvalidRequest"}


def botocore_client(options: dict[str, Any]) -> Any:
    """A synchronous botocore S3 client from s3fs's storage options (what ``Lake.open`` gave
    the filesystem): the same endpoint, credentials, region and client settings, so the
    lock is changed where, and as whom, the lake is written. Without keys, botocore finds
    credentials in the AWS environment just as s3fs does."""
    import botocore.config  # type: ignore[import-untyped]
    import botocore.session  # type: ignore[import-untyped]

    client_kwargs = dict(options.get("client_kwargs") or {})
    for ours, theirs in (
        ("endpoint_url", "endpoint_url"),
        ("key", "aws_access_key_id"),
        ("username", "aws_access_key_id"),
        ("secret", "aws_secret_access_key"),
        ("password", "aws_secret_access_key"),
        ("token", "aws_session_token"),
    ):
        if options.get(ours) and theirs not in client_kwargs:
            client_kwargs[theirs] = options[ours]
    config = botocore.config.Config(**dict(options.get("config_kwargs") or {}))
    if options.get("anon"):
        config = config.merge(botocore.config.Config(signature_version=botocore.UNSIGNED))
    session = botocore.session.Session(profile=options.get("profile"))
    return session.create_client("s3", config=config, **client_kwargs)


class S3Slot:
    """Conditional requests on the ETag; plain ones where the store refuses them.

    The requests go through a botocore client of their own (``botocore_client``): s3fs's
    public ``pipe_file`` can make an exclusive create but not an ``If-Match`` write or
    delete, and its private coroutines change between releases. botocore's errors are
    translated as s3fs translates them (``s3fs.errors.translate_boto_error``), so a caller
    meets the same ``OSError`` subclasses from the lock as from every other lake call."""

    def __init__(self, options: dict[str, Any], full: str, settle: float) -> None:
        self.client = botocore_client(options)
        self.bucket, _, self.key = full.partition("/")
        self.conditional = True
        self.settle = settle

    def clean(self, older_than: float) -> None:
        pass  # nothing is ever put beside the lock on S3

    def _call(self, method: str, **kwargs: Any) -> Any:
        import botocore.exceptions
        from s3fs.errors import translate_boto_error

        try:
            return getattr(self.client, method)(Bucket=self.bucket, Key=self.key, **kwargs)
        except botocore.exceptions.ClientError as exc:
            raise translate_boto_error(exc) from exc

    def read(self) -> tuple[bytes, Any] | None:
        try:
            out = self._call("get_object")
        except FileNotFoundError:
            return None
        with contextlib.closing(out["Body"]) as body:
            data: bytes = body.read()
        return data, str(out["ETag"])

    def _conditional(self, method: str, condition: dict[str, str], **kwargs: Any) -> bool:
        """One conditional request: True done, False the condition failed. A store that
        refuses conditions gets the plain request from then on (the documented limit)."""
        if self.conditional:
            try:
                self._call(method, **condition, **kwargs)
                return True
            except OSError as exc:
                code = s3_error_code(exc)
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


# -- foreign errors' words ----------------------------------------------------------------------
def s3_error_code(exc: BaseException) -> str:
    """The S3 error code behind an exception s3fs translated from botocore's
    ``ClientError`` (kept as a cause or context), "" when there is none."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
        seen = seen.__cause__ or seen.__context__
    return ""


def nearest_existing(path: str) -> tuple[str, list[str]]:
    """The nearest part of ``path`` that exists (``path`` itself, or an ancestor), and the
    parts below it that do not, deepest first. A file in the middle of the path ends the
    walk there: ``/etc/hostname/lake`` gives ``/etc/hostname``."""
    missing: list[str] = []
    while True:
        try:
            os.stat(path)
            return path, missing
        except (FileNotFoundError, NotADirectoryError):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:  # pragma: no cover - "/" always exists
                return path, missing
            path = parent


def server_message(exc: BaseException) -> str:
    """The storage's own words for ``exc`` (S3's error message as s3fs passes it on)."""
    text = str(exc.args[0]) if exc.args else ""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text.strip() or type(exc).__name__


def local_reason(exc: OSError) -> str:
    """Why a local file operation failed, in words, with what to do where there is a fix."""
    reason = (exc.strerror or type(exc).__name__).lower()
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{reason}: choose another --out, or give this user access there"
    if exc.errno == errno.EROFS:
        return f"{reason}: mount it writable, or choose another --out"
    if exc.errno == errno.ENOSPC:
        return f"{reason}: free some space, or choose another --out"
    return reason


Backend = LocalBackend | S3Backend
