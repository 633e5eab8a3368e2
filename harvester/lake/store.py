"""Lake: one fsspec filesystem plus a root; whole-file atomic writes, listing, local and S3.

Every path a caller passes is relative to the root and '/'-separated; it is checked so it can
never climb out of the root. Writes are atomic for readers, in different ways per backend:

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

**Preflight.** ``Lake.open_checked`` (what ``runner.open_lake`` calls, first thing in every
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
import errno
import os
import re
import uuid
from collections.abc import Callable, Container, Iterator, Mapping
from typing import Any, Final

import fsspec

from harvester.config import Settings
from harvester.errors import ConfigError, HarvesterError, LakeError

TEMP_MARK: Final = ".tmp-"
# The write probe's name: hidden from readers (a leading '.') and shaped like our temp files,
# so a listing never shows it; named so that anyone who meets a leftover knows whose it is.
PROBE_PREFIX: Final = ".harvester-write-check"
# What the credentials need on S3, named in the "access denied" message.
_S3_PERMISSIONS: Final = "s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject"
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


def fsync_dir(directory: str) -> None:
    """Make a rename or a new name in ``directory`` durable (POSIX needs the directory's
    own fsync for that)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Lake:
    """A lake root on local disk or S3. Build with ``Lake.open``."""

    def __init__(self, fs: Any, root: str, uri: str, local: bool) -> None:
        self.fs = fs  # the fsspec filesystem, for readers that want it (e.g. pyarrow)
        self.root = root.rstrip("/")  # in the filesystem's own terms (no protocol)
        self._uri = uri
        self._local = local

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
        (the run makes them anew when it writes). Raises ``LakeError``."""
        action = "write to" if for_write else "read"
        with storage_errors(self.uri, action):
            if self._local:
                self._preflight_local(for_write)
            else:
                self._preflight_s3(for_write)

    def _probe_name(self) -> str:
        return f"{PROBE_PREFIX}{TEMP_MARK}{uuid.uuid4().hex}"

    def _preflight_local(self, for_write: bool) -> None:
        existing, missing = _nearest_existing(self.root)
        if not os.path.isdir(existing):
            raise LakeError(
                f"cannot use {self.uri} as a lake: {existing} is a file, not a directory"
            )
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
                        f"cannot write to {self.uri}: cannot create the directory {directory}"
                        f" ({_local_reason(exc)})"
                    ) from exc
                made.append(directory)
            probe = os.path.join(self.root, self._probe_name())
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

    def _preflight_s3(self, for_write: bool) -> None:
        bucket, _, prefix = self.root.partition("/")
        # One listing of at most one key: proves the credentials, the bucket and list access
        # (on the lake's own prefix, which is all an IAM policy may grant), and unlike
        # ``ls`` it tells a missing bucket from an empty prefix.
        self.fs.call_s3(
            "list_objects_v2", Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1
        )
        if not for_write:
            return
        probe = f"{self.root}/{self._probe_name()}"
        self.fs.pipe_file(probe, b"harvester write check\n")
        try:
            self.fs.rm_file(probe)
        except PermissionError as exc:
            raise LakeError(
                f"cannot delete from {self.uri}: {_server_message(exc)} (the harvester deletes"
                f" files it replaces; allow {_S3_PERMISSIONS}); the probe object"
                f" s3://{probe} is left behind: delete it"
            ) from None
        finally:
            self.fs.invalidate_cache(probe)

    # -- identity (never any credentials) ----------------------------------------------
    @property
    def uri(self) -> str:
        return self._uri

    @property
    def is_local(self) -> bool:
        return self._local

    @property
    def local_path(self) -> str | None:
        """The absolute root directory for a local lake; None for S3."""
        return self.root if self._local else None

    def __repr__(self) -> str:
        return f"Lake({self._uri!r})"

    __str__ = __repr__

    def child(self, prefix: str) -> Lake:
        """The lake rooted at ``prefix`` under this one, on the same filesystem (and so with
        the same credentials): refresh's staging areas are lakes of their own."""
        full = self.full_path(prefix)
        return Lake(self.fs, full, f"{self._uri.rstrip('/')}/{prefix}", self._local)

    def full_path(self, path: str) -> str:
        """The path in the filesystem's terms (what ``self.fs`` methods take)."""
        return f"{self.root}/{_check_relative(path)}"

    # -- files -------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file atomically (see the module docstring for how, per backend)."""
        full = self.full_path(path)
        if not self._local:
            self.fs.pipe_file(full, data)
            self.fs.invalidate_cache(full)
            return
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

    def write_hidden(self, path: str, data: bytes) -> str:
        """Write a whole file under a temp name beside ``path`` (``.<name>.tmp-<uuid32>``,
        which no reader globs for and ``list_files`` hides) and return that name, relative:
        ``publish`` makes it ``path``. A run that writes several files this way can make
        them all appear in a short burst, after the slow part (encoding, uploading) is
        over: that is how a partition's files are swapped (``commit.replace_partition``)."""
        directory, _, name = path.rpartition("/")
        temp = f"{directory}/" if directory else ""
        temp += f".{name}{TEMP_MARK}{uuid.uuid4().hex}"
        full = self.full_path(temp)
        if not self._local:
            self.fs.pipe_file(full, data)
            self.fs.invalidate_cache(full)
            return temp
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
        return temp

    def publish(self, temp: str, path: str) -> None:
        """Give a file ``write_hidden`` wrote its real name: one atomic rename locally (then
        the directory is synced, so the name outlives a crash); on S3 a server-side copy
        and a delete of the temp object (no bytes travel again, and the copy appears whole)."""
        source, target = self.full_path(temp), self.full_path(path)
        if self._local:
            os.replace(source, target)
            fsync_dir(os.path.dirname(target))
            return
        self.fs.copy(source, target)
        self.fs.rm_file(source)
        self.fs.invalidate_cache(source)
        self.fs.invalidate_cache(target)

    def read_bytes(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(self.full_path(path))
        return data

    def read_many(self, paths: list[str]) -> list[bytes]:
        """Read several files (concurrently on S3), in the order given."""
        if not paths:
            return []
        fulls = [self.full_path(p) for p in paths]
        if self._local:
            return [self.read_bytes(p) for p in paths]
        got: dict[str, bytes] = self.fs.cat(fulls, on_error="raise")
        return [got[self.fs._strip_protocol(f)] for f in fulls]

    def exists(self, path: str) -> bool:
        full = self.full_path(path)
        if self._local:
            return os.path.exists(full)
        self.fs.invalidate_cache(full)
        return bool(self.fs.exists(full))

    def delete(self, path: str) -> None:
        """Remove one file; a missing file is fine (deletes are retried after crashes)."""
        full = self.full_path(path)
        if self._local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(full)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(full)
        self.fs.invalidate_cache(full)

    def remove_empty_dirs(self, prefix: str) -> None:
        """Local only: drop directories left empty under ``prefix`` (S3 has none)."""
        if not self._local:
            return
        top = self.full_path(prefix)
        for directory, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):  # not empty, or already gone
                os.rmdir(directory)

    def list_files(self, prefix: str = "", suffix: str | None = None) -> list[str]:
        """Files under ``prefix`` (recursive), relative to the root, sorted; no temp files."""
        return sorted(self._listing(prefix, suffix, sizes=False))

    def file_sizes(self, prefix: str = "", suffix: str | None = None) -> dict[str, int]:
        """``list_files`` with each file's size in bytes (from the same one listing)."""
        return dict(sorted(self._listing(prefix, suffix, sizes=True).items()))

    def _listing(self, prefix: str, suffix: str | None, sizes: bool) -> dict[str, int]:
        """Relative path -> size (0 unless ``sizes``) of the files under ``prefix``."""
        base = self.full_path(prefix) if prefix else self.root
        found: dict[str, int] = {}
        if self._local:
            if os.path.isfile(base):
                paths = [base]
            else:
                paths = [os.path.join(d, n) for d, _, names in os.walk(base) for n in names]
            for full in paths:
                found[full] = os.path.getsize(full) if sizes else 0
        else:
            self.fs.invalidate_cache(base)
            if sizes:
                for name, info in self.fs.find(base, detail=True).items():
                    found[self.fs._strip_protocol(name)] = int(info.get("size") or 0)
            else:
                found = dict.fromkeys((self.fs._strip_protocol(f) for f in self.fs.find(base)), 0)
        out: dict[str, int] = {}
        for full, size in found.items():
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
        if self._local:
            found = [os.path.join(d, n) for d, _, names in os.walk(self.root) for n in names]
        else:
            self.fs.invalidate_cache(self.root)
            found = [self.fs._strip_protocol(f) for f in self.fs.find(self.root)]
        return sorted(
            full[len(self.root) + 1 :].replace(os.sep, "/")
            for full in found
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
        if self._local:
            for directory, dirs, names in os.walk(self.root):
                dirs.sort()
                for name in sorted(names):
                    rel = os.path.relpath(os.path.join(directory, name), self.root)
                    if rel.replace(os.sep, "/") not in skip:
                        return rel.replace(os.sep, "/")
            return None
        return self._s3_example(self.root, skip)

    def _s3_example(self, directory: str, skip: Container[str]) -> str | None:
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
            rel = full[len(self.root) + 1 :] if full.startswith(self.root + "/") else full
            if rel not in skip:
                return rel
        for sub in subdirs:
            if sub != directory and (found := self._s3_example(sub, skip)) is not None:
                return found
        return None


# -- foreign errors: mapped here, and only here ------------------------------------------------
def _nearest_existing(path: str) -> tuple[str, list[str]]:
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


def _server_message(exc: BaseException) -> str:
    """The storage's own words for ``exc`` (S3's error message as s3fs passes it on)."""
    text = str(exc.args[0]) if exc.args else ""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text.strip() or type(exc).__name__


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
                f"access denied: cannot {action} {uri} ({_server_message(exc)}); the"
                f" credentials in use need {_S3_PERMISSIONS} on it"
            )
        if isinstance(exc, OSError):
            return LakeError(f"cannot {action} {uri}: {_server_message(exc)}")
        return None
    if isinstance(exc, OSError):
        where = exc.filename if isinstance(exc.filename, str) else None
        if where is not None and os.path.basename(where).startswith(PROBE_PREFIX):
            where = os.path.dirname(where)  # the probe's name means nothing to the user
        at = f" ({where})" if where and where != uri else ""
        return LakeError(f"cannot {action} {uri}: {_local_reason(exc)}{at}")
    return None


def _local_reason(exc: OSError) -> str:
    """Why a local file operation failed, in words, with what to do where there is a fix."""
    reason = (exc.strerror or type(exc).__name__).lower()
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{reason}: choose another --out, or give this user access there"
    if exc.errno == errno.EROFS:
        return f"{reason}: mount it writable, or choose another --out"
    if exc.errno == errno.ENOSPC:
        return f"{reason}: free some space, or choose another --out"
    return reason


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
