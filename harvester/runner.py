"""What every command that talks to the API sets up the same way: the client, the lake, the
preflight, and one pipeline run over a state's pending shards.

``harvest``, ``refresh`` (each of its staging areas), ``verify`` and ``plan`` use these, so a
setting reaches the client, and a shard its pipeline, by one road.
"""

from __future__ import annotations

from harvester.checkpoint import sweep_page_stores
from harvester.client import ApiClient
from harvester.commit import LakeSink
from harvester.config import Settings
from harvester.lake import Lake
from harvester.pipeline import PipelineConfig, ShardPipeline
from harvester.plan import Planner
from harvester.progress import Progress
from harvester.shard import UNDATED_KEY, Shard
from harvester.state import HarvestState, ShardMarker, StoredPlan


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
    )


def open_lake(settings: Settings) -> Lake:
    return Lake.open(settings.out, settings.storage_options())


async def preflight(client: ApiClient) -> None:
    """Prove the URL, the path and the key before the lake is touched. The field list must
    exist, so its 404 means a wrong --api-url (a search's 404 would look like "no rows")."""
    await client.fields()


def make_planner(settings: Settings, client: ApiClient) -> Planner:
    return Planner(client, settings.date_template, settings.shard_size)


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
    ) -> None:
        self.state = state
        self.plan = plan
        self._progress = progress
        config = PipelineConfig(
            settings.concurrency,
            settings.rows,
            settings.max_window,
            settings.shard_attempts,
            plan.date_template,
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
        """Fetch the given shards again (the closing check's moved shards)."""
        self._progress.add_shards(len(shards))
        await self.pipeline.run(shards)

    def failures(self) -> dict[str, str]:
        return failed_shards(self.state, self.plan)
