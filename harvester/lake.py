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

Listings must never be stale (a resume decides what to redo from them), so the S3 listing
cache is disabled and caches are invalidated after every change.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Container, Mapping
from typing import Any, Final

import fsspec

TEMP_MARK: Final = ".tmp-"
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
            if not bucket or "@" in bucket or ":" in bucket:
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
        base = self.full_path(prefix) if prefix else self.root
        if self._local:
            if os.path.isfile(base):
                found = [base]
            else:
                found = [os.path.join(d, n) for d, _, names in os.walk(base) for n in names]
        else:
            self.fs.invalidate_cache(base)
            found = [self.fs._strip_protocol(f) for f in self.fs.find(base)]
        out: list[str] = []
        for full in found:
            if not full.startswith(self.root + "/"):
                continue
            rel = full[len(self.root) + 1 :].replace(os.sep, "/")
            name = rel.rsplit("/", 1)[-1]
            if is_temp_name(name) or (suffix is not None and not name.endswith(suffix)):
                continue
            out.append(rel)
        return sorted(out)

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
        accepts, given their relative path, when given); returns how many. S3 writes never
        make temp objects, but another tool may have copied some."""
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
