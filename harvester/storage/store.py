"""Lake: one fsspec filesystem plus a root; whole-file atomic writes, listing, local and S3.

Every path a caller passes is relative to the root and '/'-separated; it is checked so it can
never climb out of the root. What differs between local disk and S3 is one backend class
each (``backends``: byte I/O, the lock's slot, the page store); the handle holds one and
never branches on which, and callers ask the handle (``lock_slot``, ``page_store``).

**Every change is fenced.** A write, publish or delete through the handle first calls the
lock holder's fence (``Lake.fence``), so a run that lost the lake's lock writes nothing
more, whichever module writes; only the lock's own slot is changed unfenced (the fence
reads it). See ``Lake``.

Writes are atomic for readers, in different ways per backend:

- Local disk: the bytes go to a sibling temp file ``.<name>.tmp-<uuid32>`` (fsync'd), then
  ``os.replace`` renames it over the target. A rename within one directory is atomic on
  POSIX, so a reader sees the old file or the new one, never a partial one. A killed run can
  leave a temp file behind; its name starts with ``.`` and does not end in ``.parquet``, so
  DuckDB and Spark never read it, and ``cleanup_temp_files`` removes it (the sweep only
  those of files the harvester owns: ``commit.is_own_file``).
- S3: one ``PutObject`` (s3fs switches to a multipart upload above 100 MB). S3 makes an
  object visible only once its upload completes, and an overwrite replaces the whole object,
  so readers likewise see old or new, never partial. A rename would be a copy plus delete on
  S3, i.e. slower and *not* atomic, which is why S3 writes go straight to the target.
- Several files that must appear together (a partition's new files) are written with
  ``write_hidden`` first, under temp names, and given their names by ``publish`` once all
  are written: a rename each locally, a server-side copy each on S3. Readers then see old
  and new files together only for the span of those renames or copies.

Listings must never be stale (a resume decides what to redo from them), so the S3 listing
cache is disabled and caches are invalidated after every change.

**Preflight.** ``Lake.open_checked`` (what ``open_lake`` calls, first thing in every
command) opens the lake and proves it usable before any API request is spent:
``Lake.preflight`` lists the root (credentials, bucket, read access) and, for a command that
writes, creates and deletes a probe ``.harvester-write-check.tmp-<uuid32>`` at the root
(the directories of a new local lake are made for it and removed again, so a run that then
fails leaves nothing behind). Foreign exceptions (``OSError`` and its subclasses, botocore's
credential and connection errors, S3's ``NoSuchBucket`` and ``AccessDenied`` as s3fs
translates them) become ``LakeError`` (exit 4) with what to do, in ``storage_error`` only;
a URI that can never name a lake (``/``, ``s3://``, ``gs://...``) is a ``ConfigError`` (2).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Container, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import fsspec

from harvester.config import Settings
from harvester.errors import ConfigError, HarvesterError, LakeError
from harvester.storage.backends import (
    PROBE_PREFIX,
    S3_PERMISSIONS,
    TEMP_MARK,
    Backend,
    LocalBackend,
    LockSlot,
    S3Backend,
    fsync_dir,
    local_reason,
    nearest_existing,
    server_message,
)

if TYPE_CHECKING:
    from harvester.storage.checkpoint import PageStore

__all__ = ["PROBE_PREFIX", "TEMP_MARK", "Lake", "fsync_dir", "is_temp_name", "open_lake"]

_TEMP_NAME: Final = re.compile(r"\..+\.tmp-[0-9a-f]{32}")


def is_temp_name(name: str) -> bool:
    """True for the temp files ``write_bytes`` makes (``.<name>.tmp-<uuid32>``)."""
    return _TEMP_NAME.fullmatch(name) is not None


def _check_relative(path: str) -> str:
    """A clean relative path: no absolute path, no '..' or '.' or empty parts, no backslash."""
    parts = path.split("/")
    if not path or "\\" in path or "\x00" in path or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a clean relative lake path: {path!r}")
    return path


Fence = Callable[[], None]


class Lake:
    """A lake root on local disk or S3. Build with ``Lake.open``.

    **The fence.** Every write, publish and delete through the handle first calls the fence
    (``fence``, set by the lock's holder: ``lock.holding``), which raises ``LockLost`` once
    this run no longer holds the lake's lock; so no write can go around it, whichever module
    makes it. A handle and every ``child`` of it share one fence (a refresh's staging areas
    are written by the same run). Reads are never fenced. The lock's own file is the one
    exception: it is changed through its ``lock_slot``, which the fence itself reads.
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        uri: str,
        local: bool,
        *,
        backend: Backend | None = None,
        fence: list[Fence] | None = None,
    ) -> None:
        self.fs = fs  # the fsspec filesystem, for readers that want it (e.g. pyarrow)
        self.root = root.rstrip("/")  # in the filesystem's own terms (no protocol)
        self._uri = uri
        self._backend: Backend = backend or (LocalBackend(fs) if local else S3Backend(fs))
        # A list, shared with every child: setting the fence on one fences them all.
        self._fence: list[Fence] = [] if fence is None else fence

    @classmethod
    def open(cls, uri: str, storage_options: Mapping[str, Any] | None = None) -> Lake:
        """``./lake``, ``/abs/lake``, ``file:///abs/lake`` or ``s3://bucket/prefix``.

        For S3, ``storage_options`` go to ``s3fs.S3FileSystem`` (``endpoint_url``,
        ``client_kwargs``, ``key``/``secret``, ...); without keys, s3fs takes credentials
        from the usual AWS environment (variables, profile, instance role).
        """
        if not uri:
            raise ValueError("empty lake URI")
        if uri.startswith("s3://"):
            bucket, _, prefix = uri[len("s3://") :].partition("/")
            if not bucket:
                raise ValueError("an S3 lake URI names a bucket: s3://bucket/prefix")
            if "@" in bucket or ":" in bucket:
                # Refuse s3://key:secret@bucket: the URI is printed in messages and reports.
                raise ValueError("an S3 lake URI is s3://bucket/prefix (no credentials in it)")
            prefix = prefix.strip("/")
            if prefix:
                _check_relative(prefix)
            options = dict(storage_options or {})
            # Stale listings would make a resume redo or skip work; never cache them.
            options["use_listings_cache"] = False
            options.setdefault("skip_instance_cache", True)
            fs = fsspec.filesystem("s3", **options)
            root = f"{bucket}/{prefix}" if prefix else bucket
            return cls(fs, root, f"s3://{root}", local=False)
        if "://" in uri and not uri.startswith("file://"):
            raise ValueError(f"unsupported lake URI scheme (use a path or s3://): {uri}")
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        root = os.path.abspath(os.path.expanduser(path))
        if root == os.path.dirname(root):
            raise ValueError(f"refusing a filesystem root as the lake root: {uri}")
        return cls(fsspec.filesystem("file"), root, root, local=True)

    @classmethod
    def open_checked(
        cls, uri: str, storage_options: Mapping[str, Any] | None = None, *, for_write: bool
    ) -> Lake:
        """``open`` then ``preflight``, for a command's lake: a URI that can never be a lake
        is a ``ConfigError``; a lake that cannot be used (``for_write``: written) is a
        ``LakeError``, both one line, before any API request."""
        try:
            lake = cls.open(uri, storage_options)
        except ValueError as exc:
            raise ConfigError(f"invalid lake URI {uri!r} (--out): {exc}") from None
        lake.preflight(for_write=for_write)
        return lake

    # -- preflight ----------------------------------------------------------------------
    def preflight(self, *, for_write: bool) -> None:
        """Prove the lake usable before a command spends any request: its root can be
        listed (local: every existing part of the path is a directory; S3: credentials, the
        bucket, list access), and with ``for_write`` a probe can be created and deleted at
        the root. A probe only proves what a write needs, so nothing is left behind: the
        probe goes, and the directories a new local lake needed for it are removed again
        (the run makes them anew when it writes). Raises ``LakeError``.

        Not fenced: it runs before any lock is taken, and its probe is gone when it returns."""
        action = "write to" if for_write else "read"
        with storage_errors(self.uri, action):
            self._backend.preflight(self.root, self.uri, for_write)

    # -- the fence ------------------------------------------------------------------------
    @property
    def fence(self) -> Fence | None:
        """The check every write makes first (None: no lock held through this handle)."""
        return self._fence[0] if self._fence else None

    @fence.setter
    def fence(self, check: Fence | None) -> None:
        self._fence[:] = [] if check is None else [check]

    def check_fence(self) -> None:
        """Raise (``errors.LockLost``) if this run no longer holds the lake's lock."""
        for check in self._fence:
            check()

    # -- what differs per backend, asked for by the modules that need it -----------------
    def lock_slot(self, path: str, settle: float) -> LockSlot:
        """The lock file at ``path`` as the backend changes it atomically (``lock``):
        unfenced, because the fence reads it. ``settle``: how long an S3 lock is left
        before it is read back to confirm a win."""
        return self._backend.lock_slot(self.full_path(path), settle)

    def page_store(self, slug: str) -> PageStore:
        """The page checkpoints of one shard, as this backend keeps them (``checkpoint``):
        their writes are fenced like every other."""
        return self._backend.page_store(self, slug)

    # -- identity (never any credentials) ----------------------------------------------
    @property
    def uri(self) -> str:
        return self._uri

    @property
    def is_local(self) -> bool:
        return self._backend.local

    @property
    def local_path(self) -> str | None:
        """The absolute root directory for a local lake; None for S3."""
        return self.root if self._backend.local else None

    def __repr__(self) -> str:
        return f"Lake({self._uri!r})"

    __str__ = __repr__

    def child(self, prefix: str) -> Lake:
        """The lake rooted at ``prefix`` under this one, on the same filesystem (and so with
        the same credentials) and behind the same fence: refresh's staging areas are lakes
        of their own, written by the same run."""
        full = self.full_path(prefix)
        return type(self)(
            self.fs,
            full,
            f"{self._uri.rstrip('/')}/{prefix}",
            self._backend.local,
            backend=self._backend,
            fence=self._fence,
        )

    def full_path(self, path: str) -> str:
        """The path in the filesystem's terms (what ``self.fs`` methods take)."""
        return f"{self.root}/{_check_relative(path)}"

    # -- files: every change fenced --------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file atomically (see the module docstring for how, per backend)."""
        full = self.full_path(path)
        self.check_fence()
        self._backend.write(full, data)

    def write_hidden(self, path: str, data: bytes) -> str:
        """Write a whole file under a temp name beside ``path`` (``.<name>.tmp-<uuid32>``,
        which no reader globs for and ``list_files`` hides) and return that name, relative:
        ``publish`` makes it ``path``. A run that writes several files this way can make
        them all appear in a short burst, after the slow part (encoding, uploading) is
        over: that is how a partition's files are swapped (``commit.replace_files``)."""
        directory, _, name = path.rpartition("/")
        temp = f"{directory}/" if directory else ""
        temp += f".{name}{TEMP_MARK}{uuid.uuid4().hex}"
        full = self.full_path(temp)
        self.check_fence()
        self._backend.write_hidden(full, data)
        return temp

    def publish(self, temp: str, path: str) -> None:
        """Give a file ``write_hidden`` wrote its real name: one atomic rename locally (then
        the directory is synced, so the name outlives a crash); on S3 a server-side copy
        and a delete of the temp object (no bytes travel again, and the copy appears whole)."""
        source, target = self.full_path(temp), self.full_path(path)
        self.check_fence()
        self._backend.publish(source, target)

    def read_bytes(self, path: str) -> bytes:
        return self._backend.read(self.full_path(path))

    def read_many(self, paths: list[str]) -> list[bytes]:
        """Read several files (concurrently on S3), in the order given."""
        if not paths:
            return []
        return self._backend.read_many([self.full_path(p) for p in paths])

    def exists(self, path: str) -> bool:
        return self._backend.exists(self.full_path(path))

    def delete(self, path: str) -> None:
        """Remove one file; a missing file is fine (deletes are retried after crashes)."""
        full = self.full_path(path)
        self.check_fence()
        self._backend.delete(full)

    def missing_directories(self) -> list[str]:
        """The root and those of its ancestors that do not exist yet, deepest first (local;
        S3 has no directories): what a first write here makes, for ``remove_if_empty`` to
        take away again when a run is refused before it wrote anything."""
        if not self._backend.local:
            return []
        return nearest_existing(self.root)[1]

    def remove_if_empty(self, directories: list[str]) -> None:
        """Remove each of ``directories`` (full paths, deepest first) that is empty; one that
        holds anything, or is gone already, stays as it is."""
        for directory in directories:
            with contextlib.suppress(OSError):
                os.rmdir(directory)

    def remove_empty_dirs(self, prefix: str) -> None:
        """Drop directories left empty under ``prefix`` (local only: S3 has none). Fenced
        too: a directory another run is about to write into must not vanish under it."""
        top = self.full_path(prefix)
        self.check_fence()
        self._backend.remove_empty_dirs(top)

    def list_files(self, prefix: str = "", suffix: str | None = None) -> list[str]:
        """Files under ``prefix`` (recursive), relative to the root, sorted; no temp files."""
        return sorted(self._listing(prefix, suffix, sizes=False))

    def file_sizes(self, prefix: str = "", suffix: str | None = None) -> dict[str, int]:
        """``list_files`` with each file's size in bytes (from the same one listing)."""
        return dict(sorted(self._listing(prefix, suffix, sizes=True).items()))

    def _listing(self, prefix: str, suffix: str | None, sizes: bool) -> dict[str, int]:
        """Relative path -> size (0 unless ``sizes``) of the files under ``prefix``."""
        base = self.full_path(prefix) if prefix else self.root
        out: dict[str, int] = {}
        for full, size in self._backend.find(base, sizes).items():
            if not full.startswith(self.root + "/"):
                continue
            rel = full[len(self.root) + 1 :].replace(os.sep, "/")
            name = rel.rsplit("/", 1)[-1]
            if is_temp_name(name) or (suffix is not None and not name.endswith(suffix)):
                continue
            out[rel] = size
        return out

    def temp_files(self) -> list[str]:
        """The temp files (``is_temp_name``) anywhere under the root, relative, sorted: what
        ``list_files`` hides."""
        return sorted(
            full[len(self.root) + 1 :].replace(os.sep, "/")
            for full in self._backend.find(self.root, sizes=False)
            if full.startswith(self.root + "/") and is_temp_name(full.rsplit("/", 1)[-1])
        )

    def cleanup_temp_files(self, owned: Callable[[str], bool] | None = None) -> int:
        """Remove temp files a killed run left anywhere under the root (only those ``owned``
        accepts, given their relative path, when given); returns how many. On S3 only
        ``write_hidden`` makes temp objects (a partition swap killed before ``publish``)."""
        removed = 0
        for path in self.temp_files():
            if owned is None or owned(path):
                self.delete(path)
                removed += 1
        return removed

    def example_file(self, skip: Container[str] = ()) -> str | None:
        """One file under the root (relative path) other than ``skip``, or None when there is
        none: whether a directory, a prefix or a whole bucket is empty, without listing all
        of it (one listing per level until the first file)."""
        return self._backend.example_file(self.root, skip)


# -- foreign errors: mapped here, and only here ------------------------------------------------
def _s3_code(exc: BaseException) -> str | None:
    """S3's error code (``NoSuchBucket``, ``AccessDenied``) behind an exception that s3fs
    translated from botocore's ``ClientError`` (kept as its ``__cause__``)."""
    response = getattr(exc.__cause__, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def storage_error(exc: BaseException, uri: str, action: str) -> HarvesterError | None:
    """The one-line ``LakeError`` (what went wrong, what to do) for a foreign exception met
    while trying to ``action`` (e.g. "read", "write to") the lake at ``uri``; None for an
    exception that is not the storage's (a bug: left to surface as itself)."""
    if isinstance(exc, HarvesterError):
        return exc
    s3 = uri.startswith("s3://")
    if s3:
        import botocore.exceptions as boto  # type: ignore[import-untyped]

        bucket = uri[len("s3://") :].split("/", 1)[0]
        if isinstance(
            exc, boto.NoCredentialsError | boto.PartialCredentialsError | boto.ProfileNotFound
        ):
            return LakeError(
                f"no usable AWS credentials for {uri} ({exc}): set AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an instance or task"
                " role applies"
            )
        if isinstance(exc, boto.EndpointConnectionError | boto.ConnectionError):
            return LakeError(
                f"cannot reach S3 for {uri}: {exc} (check HARVESTER_S3_ENDPOINT_URL and the"
                " network)"
            )
        if isinstance(exc, boto.BotoCoreError):
            return LakeError(f"cannot {action} {uri}: {exc}")
        code = _s3_code(exc)
        if code == "NoSuchBucket" or (
            isinstance(exc, FileNotFoundError) and "bucket does not exist" in str(exc)
        ):
            return LakeError(f"bucket {bucket} does not exist (for {uri}): create it, or fix --out")
        if isinstance(exc, PermissionError):
            return LakeError(
                f"access denied: cannot {action} {uri} ({server_message(exc)}); the"
                f" credentials in use need {S3_PERMISSIONS} on it"
            )
        if isinstance(exc, OSError):
            return LakeError(f"cannot {action} {uri}: {server_message(exc)}")
        return None
    if isinstance(exc, OSError):
        where = exc.filename if isinstance(exc.filename, str) else None
        if where is not None and os.path.basename(where).startswith(PROBE_PREFIX):
            where = os.path.dirname(where)  # the probe's name means nothing to the user
        at = f" ({where})" if where and where != uri else ""
        return LakeError(f"cannot {action} {uri}: {local_reason(exc)}{at}")
    return None


@contextlib.contextmanager
def storage_errors(uri: str, action: str) -> Iterator[None]:
    """Re-raise the storage's exceptions inside the block as ``storage_error`` maps them."""
    try:
        yield
    except Exception as exc:
        mapped = storage_error(exc, uri, action)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


def open_lake(settings: Settings, *, for_write: bool = False) -> Lake:
    """The lake at ``settings.out``, proven usable before any request (``Lake.preflight``:
    readable, and with ``for_write`` writable): every command opens its lake here first, so
    a bad ``--out`` costs one line and no request."""
    return Lake.open_checked(settings.out, settings.storage_options(), for_write=for_write)
