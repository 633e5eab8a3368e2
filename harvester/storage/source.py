"""The source a lake is bound to: which service, and which of its datasets, its rows came from.

A lake holds one source's rows. Harvesting a copy of a lake from another ``--api-url`` would
mix the two sources' rows, and the next refresh would "repair" the lake towards whichever it
is pointed at; nothing in the rows themselves tells them apart. So a lake records its source
in ``_harvest/lake.json`` (``state.SourceRecord``) when it is first written, and every
command that talks to the API compares it with its own before it sends a request
(``jobs.session.check_lake``): a different source is ``SourceMismatch`` (exit 10), unless the run
is told ``--rebind-source``.

What is recorded is never a secret: the API URL normalised (scheme, host, port, path; no
user, password, query or fragment, no trailing slash) and the dataset (``oa_rejections/v2``,
what the records path names). The key is not part of a source: a lake may be refreshed with
a new key.

Two sources are the same when their datasets are, and:

- both hosts are loopback (``localhost``, ``127.0.0.0/8``, ``::1``): their paths are equal.
  Scheme and port are not compared: the simulator (``make demo``, the tests) listens on a
  new port every run, and a loopback service is never the real one;
- otherwise: scheme, host (without a trailing dot, in lower case) and port (a default port
  spelled out or not) and path are equal.

So the demo lake and a real-service lake never mix by accident, while the demo lake keeps
working with the next simulator. (Two simulators with different seeds are one source by
this rule: docs/decisions.md, "A lake is bound to its source".)

Lakes written before sources were recorded are *adopted*: the URL their ``service.json``
kept, else this run's, becomes their source, and the run says so in its log.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from harvester.errors import ConfigError, SourceMismatch
from harvester.storage.state import HarvestState, SourceRecord

# The dataset this harvester asks for: the part of the client's records path
# (``/api/v1/patent/oa/oa_rejections/v2/records``) that names the API and its version.
DATASET: Final = "oa_rejections/v2"
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
REBIND_FLAG: Final = "--rebind-source"

Action = Literal["new", "same", "adopt", "rebind"]


def _is_loopback(host: str) -> bool:
    # As the client decides it may send a key over plain http: a name that merely resolves
    # to a loopback address is not one (DNS could answer otherwise tomorrow).
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Source:
    """A service and dataset, as a lake records them. ``url`` is normalised (``of``)."""

    url: str
    dataset: str = DATASET

    @classmethod
    def of(cls, api_url: str, dataset: str = DATASET) -> Source:
        """The source an API URL names: scheme, host, port and path, nothing else (a user
        and password, a query or a fragment could hold a secret: they are dropped)."""
        try:
            parts = urlsplit(api_url.strip())
            port = parts.port
        except ValueError as exc:  # a port that is no number: the URL names no service
            raise ConfigError(f"invalid api_url {api_url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        shown = f"[{host}]" if ":" in host else host
        if port is not None and port != DEFAULT_PORTS.get(scheme):
            shown += f":{port}"
        return cls(f"{scheme}://{shown}{parts.path.rstrip('/')}", dataset)

    @classmethod
    def of_record(cls, record: SourceRecord) -> Source:
        return cls.of(record.url, record.dataset)

    @property
    def _parts(self) -> tuple[str, str, str]:
        parts = urlsplit(self.url)
        return parts.scheme, (parts.hostname or ""), parts.path

    @property
    def loopback(self) -> bool:
        """A service on this machine (the simulator): compared without scheme and port."""
        return _is_loopback(self._parts[1])

    def same_as(self, other: Source) -> bool:
        if self.dataset != other.dataset:
            return False
        if self.loopback and other.loopback:
            return self._parts[2] == other._parts[2]
        return self.url == other.url

    def describe(self) -> str:
        where = "; on loopback, any port" if self.loopback else ""
        return f"{self.url} ({self.dataset}{where})"


@dataclass(frozen=True)
class Binding:
    """What a run does with its lake's source: ``new`` (a lake not written yet: bound when
    it is), ``same``, ``adopt`` (an older lake recorded none: ``bound`` becomes it) or
    ``rebind`` (``--rebind-source``: ``source`` replaces ``bound``). ``bound`` is the
    lake's source before the run (for ``adopt``: the one adopted); ``adopted_from`` says
    where an adopted source came from."""

    source: Source  # this run's
    bound: Source | None
    action: Action
    adopted_from: str = ""

    @property
    def pending(self) -> bool:
        """Whether the lake must record a source once the run writes it."""
        return self.action != "same"

    def change(self) -> str | None:
        """What recording the source changes, in a log line's words (None: a new lake)."""
        if self.action == "adopt" and self.bound is not None:
            return (
                "the lake recorded no source (written by an older harvester): bound to"
                f" {self.bound.describe()}, taken from {self.adopted_from}"
            )
        if self.action == "rebind" and self.bound is not None:
            return (
                f"{REBIND_FLAG}: the lake, harvested from {self.bound.describe()}, is bound"
                f" to {self.source.describe()}; its rows are the old source's until a"
                " refresh makes it equal to the new one"
            )
        return None

    def record(self) -> SourceRecord:
        """What the lake keeps once the run writes it."""
        if self.action == "adopt":
            assert self.bound is not None
            return SourceRecord(self.bound.url, self.bound.dataset, how="adopted")
        if self.action == "rebind":
            previous = self.bound.url if self.bound else None
            return SourceRecord(self.source.url, self.source.dataset, "rebound", previous=previous)
        return SourceRecord(self.source.url, self.source.dataset)


def binding(state: HarvestState, api_url: str, rebind: bool) -> Binding:
    """Compare the lake's source with ``api_url``'s, reading only ``_harvest/`` (no
    request): the ``Binding`` a run goes on with, or ``SourceMismatch`` naming both sources
    and the two ways on (a new ``--out``, or ``--rebind-source``)."""
    source = Source.of(api_url)
    action: Action = "same"
    adopted_from = ""
    meta = state.check_compatible()
    if meta is None and not state.has_plan():
        return Binding(source, None, "new")
    if meta is not None and meta.source is not None:
        bound = Source.of_record(meta.source)
    else:
        # Written before sources were recorded: the URL the service profile kept is the
        # one its rows came from; without one, this run's is the best there is.
        profile = state.load_service()
        if profile is not None and profile.api_url:
            bound, adopted_from = Source.of(profile.api_url), "its service.json"
        else:
            bound, adopted_from = source, "this run"
        action = "adopt"
    if bound.same_as(source):
        return Binding(source, bound, action, adopted_from)
    if rebind:
        return Binding(source, bound, "rebind", adopted_from)
    whence = f", as {adopted_from} says (it records no source)," if action == "adopt" else ""
    raise SourceMismatch(
        f"{state.lake.uri} was harvested from {bound.describe()}{whence}, not from this run's"
        f" {source.describe()}: to harvest that source, use a new --out; to bind this lake"
        f" to it on purpose, run again with {REBIND_FLAG} (a refresh then makes it equal"
        " to the new source)"
    )
