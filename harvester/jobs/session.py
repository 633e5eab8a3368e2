"""The run session: what every command that talks to the API sets up, once and in one
order, and owns for the length of the run.

``RunSession(settings, command)`` opens and checks the lake (readable and writable, one
this command may work on, bound to this run's source): no request yet, so a bad ``--out``
or a foreign directory costs one line. ``async with session:`` then

1. takes the lake's lock, for a command that writes, **before any request**: a second run
   into a lake in use is refused (exit 4) having spent nothing;
2. opens the client (``ClientPolicy`` from the settings) and proves the URL and the key;
3. proves the service's profile, or reuses the lake's (``learn_service``);
4. hands the job the session: lake, state, client, the profile and limits (``known``), the
   planner and the report.

On the way out, still under the lock, it keeps what the run learned of the service and
saves the report (which adds the run's requests to the quota ledger), then closes the
client and releases the lock. Nothing writes the lake outside the lock.

What the service was found to do is a value (``Service``: the profile and the limits),
passed where it is needed; ``Settings`` stays what the user resolved and is never rebuilt
from it. ``harvest``, ``refresh``, ``verify`` (and its repair) and ``plan`` (read-only: no
lock, no report) run in one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass, replace
from types import TracebackType

from harvester.config import Settings
from harvester.errors import LakeError, LockLost
from harvester.jobs.pipeline import PipelineConfig, ShardPipeline
from harvester.jobs.planner import Planner
from harvester.jobs.report import RunReport
from harvester.jobs.sink import LakeSink
from harvester.progress import Progress
from harvester.service import profile as service
from harvester.service.client import ApiClient
from harvester.service.policy import ClientPolicy
from harvester.service.profile import Limits
from harvester.storage.checkpoint import sweep_page_stores
from harvester.storage.commit import refuse_foreign_root
from harvester.storage.lock import LakeLock, holding
from harvester.storage.shard import UNDATED_KEY, Shard, changed_since_scope
from harvester.storage.source import Binding, binding
from harvester.storage.state import (
    LAKE_META,
    LOCK,
    HarvestState,
    ServiceProfile,
    ShardMarker,
    StoredPlan,
)
from harvester.storage.state import ROOT as STATE_ROOT
from harvester.storage.store import open_lake

log = logging.getLogger("harvester.jobs.session")


def make_client(settings: Settings) -> ApiClient:
    key = settings.api_key.reveal() if settings.api_key else None
    return ApiClient(settings.api_url, key, ClientPolicy.from_settings(settings))


def check_lake(state: HarvestState, settings: Settings, job: str) -> Binding:
    """What every command that talks to the API checks of its lake before its first
    request, reading only: the lake is one ``job`` (harvest, refresh or verify) may work on,
    and it is bound to this run's source (``source``). Raises ``LakeError`` (a schema this
    harvester does not write; a directory holding other files: a harvest there is refused,
    and it is no lake for the others) or ``SourceMismatch``. Nothing is written here: an
    adopted or rebound source is recorded by ``Service.remember`` once the run writes its
    lake, so a run refused later (a wrong key, a lake in use) leaves it untouched."""
    if state.check_compatible() is None and not state.has_plan():
        if job == "harvest":
            refuse_foreign_root(state.lake)  # before the lock would make a _harvest/ there
        elif (example := state.lake.example_file(skip={LOCK})) is not None:
            raise LakeError(
                f"{state.lake.uri} is not a harvester lake: it holds other files (e.g."
                f" {example}) and no {LAKE_META}; `harvester harvest` needs an empty"
                " directory or a new prefix"
            )
    return binding(state, settings.api_url, settings.rebind_source)


async def preflight(client: ApiClient) -> None:
    """Prove the URL, the path and the key before the lake is touched. The field list must
    exist, so its 404 means a wrong --api-url (a search's 404 would look like "no rows")."""
    await client.fields()


@dataclass
class Service:
    """What this run holds of the service: the profile (probed now, or read from the lake)
    and the limits the run works with, which shrink when the service contradicts them."""

    profile: ServiceProfile
    limits: Limits
    probed: bool  # this run asked the service (else: the lake's profile was reused)
    probe_requests: int = 0
    # The lake's source and what this run does with it (``check_lake``); None where no
    # lake is written (``plan``, ``status``).
    binding: Binding | None = None

    def remember(self, state: HarvestState) -> None:
        """Keep in the lake what the run knows of its service: the source, when the lake
        records none yet or is rebound (first: the profile is this source's), then the
        profile, a new one or one the run lowered."""
        if self.binding is not None and self.binding.pending:
            state.save_source(self.binding.record())
            if (change := self.binding.change()) is not None:
                log.warning("%s: %s", state.lake.uri, change)  # once, as the lake records it
            self.binding = replace(self.binding, action="same")
        if service.remember(self.profile, self.limits) or self.probed:
            state.save_service(self.profile)
            self.probed = False

    @property
    def date_template(self) -> str:
        """The mail-date query form proven on the service (never the configured guess)."""
        return self.profile.date_template

    def summary(self) -> dict[str, object]:
        p = self.profile
        return {
            "page_size": self.limits.page_size,
            "window": self.limits.window if self.limits.window_learned else None,
            "sort": p.sort,
            "paging": "by key" if self.limits.keyset else "by offset",
            "date_template": p.date_template,
            "stamp_form": p.stamp_form,
            "probed_at": p.probed_at,
            "probed_now": self.probed,
            "probe_requests": self.probe_requests,
            "learned": list(self.limits.events),
        }


async def learn_service(settings: Settings, state: HarvestState, client: ApiClient) -> Service:
    """The lake's profile of the service when it answers for this run, else a new probe
    (nothing is written: the caller keeps it once it holds the lake's lock). A lake being
    rebound to another source is probed anew: what the old one did says nothing of it."""
    found = binding(state, settings.api_url, settings.rebind_source)  # checked: no raise
    profile = state.load_service()
    probed = (
        profile is None
        or found.action == "rebind"
        or not service.still_valid(
            profile, settings.date_template, settings.fixed_rows, settings.rows
        )
    )
    before = client.stats.requests
    if probed:
        log.info("probing the service's limits and query semantics")
        profile = await service.discover(
            client,
            settings.api_url,
            settings.date_template,
            settings.rows,
            settings.max_window,
            rate=settings.rate,
            concurrency=settings.concurrency,
            fixed=settings.fixed_rows,
        )
    assert profile is not None
    limits = service.limits_from(
        profile, settings.max_window, settings.shard_size, settings.rows, settings.fixed_rows
    )
    return Service(profile, limits, probed, client.stats.requests - before, found)


def make_planner(client: ApiClient, known: Service) -> Planner:
    return Planner(client, known.date_template, known.limits)


def pending_shards(
    state: HarvestState, leaves: list[Shard], markers: dict[str, ShardMarker]
) -> list[Shard]:
    """Shards not yet done. Shards planned empty are committed at once (no request): the
    closing check recounts them, so rows that appear there later are still fetched."""
    todo = []
    for shard in leaves:
        marker = markers.get(shard.key)
        if marker is not None and marker.done:
            continue
        if shard.expected == 0 and marker is None and shard.key != UNDATED_KEY:
            state.save_marker(shard, ShardMarker(shard.key, "done"))
            continue
        todo.append(shard)
    return todo


def committed_rows(leaves: list[Shard], markers: dict[str, ShardMarker]) -> int:
    return sum(m.rows for s in leaves if (m := markers.get(s.key)) and m.done)


def failed_shards(state: HarvestState, plan: StoredPlan) -> dict[str, str]:
    """Key -> cause of every leaf of ``plan`` whose last attempt failed."""
    markers = state.load_markers()
    return {
        s.key: m.cause or ""
        for s in state.leaves(plan, markers)
        if (m := markers.get(s.key)) is not None and m.status == "failed"
    }


class ShardRunner:
    """One pipeline over one state (the lake, or a refresh staging area) and its plan."""

    def __init__(
        self,
        settings: Settings,
        client: ApiClient,
        planner: Planner,
        state: HarvestState,
        plan: StoredPlan,
        progress: Progress,
        limits: Limits,
        stamp_form: str,
    ) -> None:  # ``RunSession.runner`` builds one from the session
        self.state = state
        self.plan = plan
        self._progress = progress
        # Kept pages are used only once proven to still hold: no row of their shard changed
        # since the plan's watermark (``fetch_shard``). A plan without one keeps no pages.
        mark = plan.watermark
        scope = changed_since_scope(mark, stamp_form) if mark is not None else None
        config = PipelineConfig(
            settings.concurrency, settings.shard_attempts, plan.date_template, limits, scope
        )
        keep = settings.page_checkpoints and scope is not None
        sink = LakeSink(state, page_checkpoints=keep)
        self.pipeline = ShardPipeline(client, planner, sink, config, progress)

    def leaves(self) -> tuple[list[Shard], dict[str, ShardMarker]]:
        markers = self.state.load_markers()
        return self.state.leaves(self.plan, markers), markers

    async def run_pending(self) -> int:
        """Fetch every shard not done yet; returns how many kept-page files were swept."""
        leaves, markers = self.leaves()
        todo = pending_shards(self.state, leaves, markers)
        # Pages kept for shards no longer pending (committed or split by a killed run) go.
        swept = sweep_page_stores(self.state.lake, {s.slug for s in todo})
        self._progress.start(len(leaves), len(leaves) - len(todo), committed_rows(leaves, markers))
        await self.pipeline.run(todo)
        return swept

    async def run(self, shards: list[Shard]) -> None:
        """Fetch the given shards again (the closing check's moved shards): leaves already
        counted, done or failed, so the progress shows them pending again, not as more."""
        markers = self.state.load_markers()
        ended = [m.status for s in shards if (m := markers.get(s.key)) is not None]
        self._progress.refetch(ended.count("done"), ended.count("failed"))
        await self.pipeline.run(shards)

    def failures(self) -> dict[str, str]:
        return failed_shards(self.state, self.plan)


class RunSession:
    """One command's run: the lake it works on, the lock, the client, what the service was
    found to do and the report. See the module's docstring for the order of things.

    ``write``: the command writes the lake (its report, the service's profile, data), so
    the lock is taken first; without it (``plan``) nothing is written and no report kept.
    ``job``: the job whose rules the lake is checked by (``check_lake``), when it is not
    the command (``plan --job refresh``). ``state``: the lake, when the caller opened it
    already (``plan`` reads it to choose the job). ``existing``: the command works only on
    a lake that exists (verify), so that is checked before whether it can be written."""

    def __init__(
        self,
        settings: Settings,
        command: str,
        progress: Progress | None = None,
        *,
        write: bool = True,
        job: str | None = None,
        state: HarvestState | None = None,
        existing: bool = False,
    ) -> None:
        self.settings = settings  # as the user resolved them: never rebuilt from the service
        self.command = command
        self.progress = progress if progress is not None else Progress()  # Progress(): quiet
        self.write = write
        if state is None:  # first: a bad --out costs nothing
            state = HarvestState(open_lake(settings, for_write=not existing))
        self.state = state
        self.lake = state.lake
        # A new lake is refused where anything else lives, an existing one bound to another
        # source too: before the lock would make a _harvest/ there, and before any request.
        self.binding = check_lake(self.state, settings, job or command)
        if existing:
            # A command only for a lake (verify): "not a lake" is the first thing to say of
            # a directory that is none, before whether it could be written.
            state.require_lake()
            self.lake.preflight(for_write=write)
        self.report = RunReport.begin(command, settings)
        # Set by ``__aenter__``: valid inside ``async with`` only.
        self.client: ApiClient
        self.known: Service
        self.planner: Planner
        self.lock: LakeLock | None = None
        self.keep_report = write  # a job that turns out to write nothing may clear it
        self._saved = False
        self._opened: AbstractAsyncContextManager[RunSession] | None = None

    @property
    def limits(self) -> Limits:
        return self.known.limits

    def runner(self, state: HarvestState, plan: StoredPlan) -> ShardRunner:
        """A pipeline over ``state`` (the lake, or a refresh's staging area) and its plan."""
        return ShardRunner(
            self.settings,
            self.client,
            self.planner,
            state,
            plan,
            self.progress,
            self.limits,
            self.known.profile.stamp_form,
        )

    def begin_writing(self) -> None:
        """From here on the run writes its lake: an error's report is kept too (before, a
        bad start leaves the lake as it was), and on the way out what the run learned of
        the service. The job keeps the profile itself where its order matters (a new
        harvest: the lake's meta first, then the profile, then the plan)."""
        assert self.lock is not None, "only a session holding the lock writes"
        self.report.writing = True

    def save_report(self) -> None:
        """Save the report now (the job's last write before its own final step); the
        session then does not save it again on the way out."""
        self.report.save(self.state)
        self._saved = True

    def _remember_on_the_way_out(self) -> None:
        """Keep what the run learned of the service as it stops early; a lake failing now
        is logged, never raised over the error that stopped the run."""
        self.report.extra.setdefault("service", self.known.summary())
        try:
            self.known.remember(self.state)
        except Exception as exc:
            log.warning("could not keep the service's profile: %s", exc)

    async def __aenter__(self) -> RunSession:
        self._opened = self._open()
        return await self._opened.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._opened is not None
        return await self._opened.__aexit__(kind, exc, tb)

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[RunSession]:
        # A new lake's lock makes its _harvest/; a run refused before it wrote anything (a
        # wrong key, a query the service refuses) takes that directory away again.
        fresh = self.write and not self.lake.list_files(STATE_ROOT)
        made = self.lake.missing_directories() if fresh else []  # ...and maybe its root
        try:
            async with self._held() as session:
                yield session
        finally:
            if fresh and not self.report.writing:
                self.lake.remove_empty_dirs(STATE_ROOT)
                self.lake.remove_if_empty(made)

    @asynccontextmanager
    async def _held(self) -> AsyncIterator[RunSession]:
        async with AsyncExitStack() as stack:
            if self.write:
                # Before any request: a lake in use is refused having spent nothing.
                self.lock = await stack.enter_async_context(holding(self.state, self.command))
            self.client = await stack.enter_async_context(make_client(self.settings))
            # A read-only session keeps no report, not even of a signal.
            kept = self.report.kept(self.state, self.client.stats) if self.write else nullcontext()
            with kept:
                self.progress.bind_stats(self.client.progress_counters)
                await preflight(self.client)
                self.known = await learn_service(self.settings, self.state, self.client)
                self.planner = make_planner(self.client, self.known)
                try:
                    yield self
                except LockLost:
                    raise  # the lake is another run's now: nothing more is written
                except BaseException:
                    if self.report.writing:  # what the run learned, however it ended
                        self._remember_on_the_way_out()
                    raise
                if self.report.writing:
                    self.known.remember(self.state)
                    self.report.extra.setdefault("service", self.known.summary())
                if self.keep_report and not self._saved:
                    self.save_report()  # inside the lock: nothing writes the lake after it
