"""What every command that talks to the API sets up the same way: the client, the lake, the
preflight, what the service was found to do, and one pipeline run over a state's pending
shards.

``harvest``, ``refresh`` (each of its staging areas), ``verify`` and ``plan`` use these, so a
setting reaches the client, and a shard its pipeline, by one road.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from harvester.config import Settings
from harvester.errors import LakeError
from harvester.jobs.pipeline import PipelineConfig, ShardPipeline
from harvester.jobs.planner import Planner
from harvester.jobs.sink import LakeSink
from harvester.lake.checkpoint import sweep_page_stores
from harvester.lake.commit import refuse_foreign_root
from harvester.lake.shard import UNDATED_KEY, Shard
from harvester.lake.source import Binding, binding
from harvester.lake.state import (
    LAKE_META,
    LOCK,
    HarvestState,
    ServiceProfile,
    ShardMarker,
    StoredPlan,
)
from harvester.progress import Progress
from harvester.service import profile as service
from harvester.service.client import ApiClient
from harvester.service.profile import Limits

log = logging.getLogger("harvester.jobs.session")


def make_client(settings: Settings) -> ApiClient:
    return ApiClient(
        settings.api_url,
        settings.api_key.reveal() if settings.api_key else None,
        rate=settings.rate,
        concurrency=settings.concurrency,
        timeout=settings.timeout,
        max_attempts=settings.max_attempts,
        min_429_wait=settings.min_429_wait,
        backoff_base=settings.backoff_base,
        backoff_max=settings.backoff_max,
        max_retry_after=settings.max_retry_after,
        outage_after=settings.outage_after,
        outage_wait_max=settings.outage_wait_max,
        max_outage=settings.max_outage,
        quota_wait=settings.quota_wait,
        quota_after=settings.quota_after,
        quota_probe=settings.quota_probe,
        max_requests=settings.max_requests,
    )


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

    def settings(self, settings: Settings) -> Settings:
        """The settings with the proven date form in place of the configured one."""
        return replace(settings, date_template=self.profile.date_template)

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
        or not service.still_valid(profile, settings.date_template)
    )
    before = client.stats.requests
    if probed:
        log.info("probing the service's limits and query semantics")
        profile = await service.discover(
            client, settings.api_url, settings.date_template, settings.rows, settings.max_window
        )
    assert profile is not None
    limits = service.limits_from(profile, settings.max_window, settings.shard_size, settings.rows)
    return Service(profile, limits, probed, client.stats.requests - before, found)


def make_planner(settings: Settings, client: ApiClient, limits: Limits) -> Planner:
    return Planner(client, settings.date_template, limits)


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
    ) -> None:
        self.state = state
        self.plan = plan
        self._progress = progress
        config = PipelineConfig(
            settings.concurrency, settings.shard_attempts, plan.date_template, limits
        )
        sink = LakeSink(state, page_checkpoints=settings.page_checkpoints)
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
