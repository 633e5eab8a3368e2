"""The lake's lock fences: atomic acquisition, a token checked before every commit and
heartbeat, stale takeover, and a run that lost its lock stops before its next write."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester.errors import LakeError, LockLost
from harvester.jobs.sink import LakeSink
from harvester.service.fetch import FetchedShard
from harvester.sim.testing import SimHandle, run_simulator_process
from harvester.storage import lock as lockmod
from harvester.storage import quarantine
from harvester.storage.checkpoint import page_store
from harvester.storage.commit import replace_files
from harvester.storage.lock import LakeLock, holding, holding_sync, is_stale, process_space
from harvester.storage.shard import Shard
from harvester.storage.state import LOCK, HarvestState, LockRecord, ShardMarker, StoredPlan
from harvester.storage.store import Lake
from tests.support.harvest import RANGE, WINDOW, harvest_cmd, harvest_env, run_harvest
from tests.support.lakecheck import assert_lake_equals_truth
from tests.support.s3server import MotoS3

SMALL_SHARDS = harvest_env(HARVESTER_SHARD_SIZE="60")
DAY = Shard(dt.date(2019, 1, 2), dt.date(2019, 1, 2))


def _now(minutes_ago: float = 0) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)).isoformat()


def thief(**changes: Any) -> LockRecord:
    """Another run's lock: on another machine, with a fresh heartbeat, unless changed."""
    record = LockRecord(
        "thief-host", 1, "refresh", _now(), _now(), secrets.token_hex(16), "other-boot", "pid:[1]"
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def put_lock(lake: Lake, record: LockRecord) -> bytes:
    """Overwrite the lock as another writer would (one atomic write); returns its bytes."""
    data = record.to_bytes()
    lake.write_bytes(LOCK, data)
    return data


def lock_bytes(lake: Lake) -> bytes | None:
    """The lock's bytes as another run reads them (through its slot), or None."""
    found = lake.lock_slot(LOCK, 0.0).read()
    return None if found is None else found[0]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    if request.param == "local":
        return Lake.open(str(tmp_path / "lake"))
    moto: MotoS3 = request.getfixturevalue("moto_s3")
    uri: str = request.getfixturevalue("s3_lake_uri")
    monkeypatch.setattr(lockmod, "S3_SETTLE_SECONDS", 0.05)
    return Lake.open(uri, moto.storage_options())


# -- acquire, beat, release ----------------------------------------------------------------
def test_the_lock_carries_a_token_and_a_second_run_is_refused(lake: Lake) -> None:
    first = LakeLock(lake, "harvest")
    first.acquire()
    held = LockRecord.parse(lock_bytes(lake) or b"")
    assert held is not None and held.token == first.token and len(held.token) == 32
    assert (held.host, held.boot_id, held.pid_ns) == process_space()
    second = LakeLock(lake, "refresh")
    with pytest.raises(LakeError, match="is in use by `harvester harvest`"):
        second.acquire()
    assert LockRecord.parse(lock_bytes(lake) or b"") == held  # the refused run wrote nothing
    first.release()
    assert lock_bytes(lake) is None
    second.acquire()
    assert (LockRecord.parse(lock_bytes(lake) or b"") or held).token == second.token
    second.release()


def test_beat_renews_only_a_lock_it_still_holds(lake: Lake) -> None:
    mine = LakeLock(lake, "harvest")
    mine.acquire()
    before = LockRecord.parse(lock_bytes(lake) or b"")
    time.sleep(0.01)
    assert mine.beat()
    after = LockRecord.parse(lock_bytes(lake) or b"")
    assert before is not None and after is not None
    assert after.token == mine.token and after.heartbeat > before.heartbeat
    assert after.started_at == before.started_at
    mine.check()  # still ours: passes

    stolen = put_lock(lake, thief())
    assert not mine.beat()
    assert lock_bytes(lake) == stolen  # never overwritten by the run that lost it
    with pytest.raises(LockLost, match=r"lost its lock to `harvester refresh` \(pid 1 on thief"):
        mine.check()
    mine.release()
    assert lock_bytes(lake) == stolen  # nor deleted


def test_a_deleted_lock_is_lost_too(lake: Lake) -> None:
    mine = LakeLock(lake, "compact")
    mine.acquire()
    lake.delete(LOCK)
    with pytest.raises(LockLost, match=r"lock\.json was removed.*stopping before writing"):
        mine.check()
    assert not mine.beat() and lock_bytes(lake) is None  # beat does not bring it back


def test_stale_locks_are_taken_over_live_ones_are_not(lake: Lake) -> None:
    host, boot_id, namespace = process_space()
    here = {"host": host, "boot_id": boot_id, "pid_ns": namespace}
    cases = [
        (thief(pid=dead_pid(), **here), True),  # this machine, its process is gone
        (thief(pid=os.getppid(), **here), False),  # this machine, its process lives
        (thief(heartbeat=_now(minutes_ago=11)), True),  # elsewhere, heartbeat too old
        (thief(heartbeat=_now(minutes_ago=2)), False),  # elsewhere, recent heartbeat
        # Same host name, PID 1 in both, another PID namespace (two containers): pid 1 is
        # alive here, but that says nothing about the holder; only its heartbeat tells.
        (thief(host=host, boot_id=boot_id, pid=1, pid_ns="pid:[42]"), False),
        (thief(host=host, boot_id=boot_id, pid=1, pid_ns="pid:[42]", heartbeat="x"), True),
    ]
    for record, stale in cases:
        assert is_stale(record) is stale, record
        put_lock(lake, record)
        mine = LakeLock(lake, "harvest")
        if stale:
            mine.acquire()
            assert (LockRecord.parse(lock_bytes(lake) or b"") or record).token == mine.token
            mine.release()
        else:
            with pytest.raises(LakeError, match="is in use by `harvester refresh`"):
                mine.acquire()
            assert LockRecord.parse(lock_bytes(lake) or b"") == record


# -- the fence ------------------------------------------------------------------------------
def fetched_day() -> FetchedShard:
    return FetchedShard(docs=[], num_found=0, attempts=1, pages=1)


def test_the_fence_stops_every_commit_of_a_run_that_lost_its_lock(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    state = HarvestState(lake)
    with holding_sync(state, "harvest"):
        stage = state.stage("changed")  # a refresh staging area carries the same fence
        state.save_marker(DAY, ShardMarker(DAY.key, "failed", cause="x"))  # held: written
        put_lock(lake, thief())
        before = sorted(lake.list_files(""))
        attempts: list[Callable[[], object]] = [
            lambda: state.save_marker(DAY, ShardMarker(DAY.key, "failed", cause="y")),
            lambda: state.save_plan(StoredPlan(DAY.first, DAY.last, "{d}", 60, [DAY])),
            lambda: stage.save_plan(StoredPlan(DAY.first, DAY.last, "{d}", 60, [DAY])),
            lambda: LakeSink(state).commit(DAY, fetched_day()),
            lambda: LakeSink(stage).record_split(DAY, 500, [DAY]),
            lambda: LakeSink(state).record_failure(DAY, "z"),
            lambda: replace_files(state, "year=2019/month=1", [], [], []),
            lambda: state.clear_refresh(),
        ]
        for attempt in attempts:
            with pytest.raises(LockLost, match="stopping before writing"):
                attempt()
        assert sorted(lake.list_files("")) == before  # nothing written, nothing deleted
        marker = state.load_marker(DAY)
        assert marker is not None and marker.cause == "x"
    assert state.fence is None  # the fence goes with the lock


def test_every_write_through_the_lake_handle_is_refused_once_the_lock_is_lost(
    lake: Lake,
) -> None:
    """The fence is the lake handle's own: a quarantine file, a page checkpoint, a publish,
    a delete, a child lake's write, none checks the lock itself, and none gets past it."""
    state = HarvestState(lake)
    body = b'{"numFound": 1, "docs": [{"id": "a"}]}'
    row = {"reason": "bad submissionDate", "source": DAY.key, "doc": {"id": "a"}}
    data_file = "year=2019/month=1/part.parquet"
    with holding_sync(state, "harvest"):
        pages = page_store(lake, DAY.slug)
        pages.save(0, body)  # held: written
        quarantine.write(state, DAY, [row])
        temp = lake.write_hidden(data_file, b"data")
        put_lock(lake, thief())
        before = ({p: lake.read_bytes(p) for p in lake.list_files("")}, lake.temp_files())
        attempts: list[Callable[[], object]] = [
            lambda: quarantine.write(state, DAY, [row, row]),
            lambda: quarantine.write(state, DAY, []),  # a delete
            lambda: pages.save(len(body), body),
            lambda: pages.clear(),
            lambda: lake.publish(temp, data_file),
            lambda: lake.write_hidden(data_file, b"more"),
            lambda: lake.delete(state.quarantine_path(DAY)),
            lambda: lake.cleanup_temp_files(),
            lambda: lake.child("_harvest/refresh/changed").write_bytes("x.json", b"{}"),
        ]
        for attempt in attempts:
            with pytest.raises(LockLost, match="stopping before writing"):
                attempt()
        after = ({p: lake.read_bytes(p) for p in lake.list_files("")}, lake.temp_files())
        assert after == before  # nothing written, renamed or deleted
        assert [start for start, _ in pages.load()] == [0]
    assert lake.fence is None and state.fence is None  # the fence goes with the lock
    lake.delete(temp)  # no fence now: an unlocked handle writes freely


async def test_holding_stops_the_body_once_the_heartbeat_finds_the_lock_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lockmod, "HEARTBEAT_SECONDS", 0.05)
    lake = Lake.open(str(tmp_path / "lake"))
    state = HarvestState(lake)
    started = time.monotonic()
    with pytest.raises(LockLost, match="lost its lock to `harvester refresh`"):
        async with holding(state, "harvest") as held:
            # Beats every 0.05 s; a loaded machine may hold the loop back, so wait for one.
            deadline = time.monotonic() + 3
            first = LockRecord.parse(lock_bytes(lake) or b"")
            while first is not None and first.heartbeat <= first.started_at:
                assert time.monotonic() < deadline, "the heartbeat never renewed the lock"
                await asyncio.sleep(0.05)
                first = LockRecord.parse(lock_bytes(lake) or b"")
            assert first is not None and first.token == held.token
            assert first.heartbeat > first.started_at  # renewed in the background
            stolen = put_lock(lake, thief())
            await asyncio.sleep(30)  # a long fetch: the heartbeat must stop it
    assert time.monotonic() - started < 5
    assert lock_bytes(lake) == stolen and state.fence is None


def test_a_reader_never_finds_a_held_lock_missing_while_it_beats(tmp_path: Path) -> None:
    # A reader outside the holder (another run's acquire, status) must never find a held
    # lock missing, or a second run could take it for free. A local heartbeat renames its
    # new record over the old one, so the file itself is never absent: the raw opens show
    # it (an earlier heartbeat renamed the old record aside first, and a raw open missed
    # it in about one read of three; the slot's read, which waited for such a change, still
    # missed one in ~90,000 when a second heartbeat began just after the first ended).
    lake = Lake.open(str(tmp_path / "lake"))
    mine = LakeLock(lake, "refresh")
    mine.acquire()
    stop = threading.Event()
    beats = 0

    def beat() -> None:
        nonlocal beats
        while not stop.is_set():
            assert mine.beat()
            beats += 1

    beater = threading.Thread(target=beat)
    beater.start()
    reads: list[bytes | None] = []
    raw_misses = 0
    path = tmp_path / "lake" / LOCK
    deadline = time.monotonic() + 30
    try:
        while beats < 500 and beater.is_alive() and time.monotonic() < deadline:
            reads.append(lock_bytes(lake))
            try:
                path.read_bytes()
            except FileNotFoundError:
                raw_misses += 1
    finally:
        stop.set()
        beater.join()
    assert beats >= 500, beats
    assert all(r is not None for r in reads), (sum(r is None for r in reads), len(reads))
    assert raw_misses == 0, (raw_misses, len(reads))
    mine.release()
    assert lock_bytes(lake) is None


def test_of_changers_racing_for_one_version_of_a_local_lock_exactly_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The compare-and-change of a local lock is made under the directory's flock: of many
    # threads replacing (or removing) the record they all read, one changes it, each time.
    slot = Lake.open(str(tmp_path / "lake")).lock_slot(LOCK, 0.0)
    assert slot.create(b"v0")
    read = slot.read

    def slow_read() -> tuple[bytes, Any] | None:
        found = read()
        time.sleep(0.002)  # widen the compare-and-change: unguarded, every thread would win
        return found

    monkeypatch.setattr(slot, "read", slow_read)

    def change(data: bytes, version: Any, barrier: threading.Barrier, wins: list[bytes]) -> None:
        barrier.wait()
        won = slot.remove(version) if data == b"" else slot.replace(version, data)
        if won:
            wins.append(data)

    for n in range(50):
        found = slot.read()
        assert found is not None
        barrier = threading.Barrier(4)
        wins: list[bytes] = []
        datas = [f"v{n}-{k}".encode() for k in range(3)] + [b""]  # b"": a removal
        threads = [
            threading.Thread(target=change, args=(d, found[1], barrier, wins)) for d in datas
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(wins) == 1, (n, wins)
        now = slot.read()
        assert (now is None) if wins == [b""] else (now is not None and now[0] == wins[0])
        if now is None:
            assert slot.create(b"v0")
    assert not [p for p in (tmp_path / "lake" / "_harvest").iterdir() if "aside" in p.name]


def test_holding_sync_beats_in_a_thread_and_leaves_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lockmod, "HEARTBEAT_SECONDS", 0.05)
    lake = Lake.open(str(tmp_path / "lake"))
    state = HarvestState(lake)
    with holding_sync(state, "compact") as held:
        first = LockRecord.parse(lock_bytes(lake) or b"")
        assert first is not None
        # Beats every 0.05 s; a loaded machine may hold the thread back, so wait for one.
        deadline = time.monotonic() + 10
        later = first
        while later.heartbeat <= first.heartbeat and time.monotonic() < deadline:
            time.sleep(0.05)
            later = LockRecord.parse(lock_bytes(lake) or b"") or first
        assert later.token == held.token
        assert later.heartbeat > first.heartbeat
    assert lock_bytes(lake) is None
    assert not [t for t in threading.enumerate() if t.name == "lake-lock-heartbeat"]


# -- two processes racing for the lock --------------------------------------------------------
def _race_worker(
    uri: str,
    options: dict[str, Any],
    rounds: int,
    settle: float,
    barrier: Any,
    results: Any,
) -> None:
    lockmod.S3_SETTLE_SECONDS = settle
    lake = Lake.open(uri, options)
    for n in range(rounds):
        barrier.wait()  # the parent set the round up
        contender = LakeLock(lake, f"race-{os.getpid()}")
        try:
            contender.acquire()
            won, error = True, ""
        except LakeError as exc:
            won, error = False, str(exc)
        if won:
            contender.check()  # the winner's fence passes while it holds the lock
        results.put((n, won, error))
        barrier.wait()  # both have tried; the winner still holds it
        if won:
            contender.release()
        barrier.wait()


def race(lake: Lake, options: dict[str, Any], rounds: int, settle: float) -> None:
    """Two processes try to take the lock at the same moment, ``rounds`` times, alternately
    on a free lake and over a stale lock: exactly one wins each time."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3, timeout=60)
    results = ctx.Queue()
    args = (lake.uri, options, rounds, settle, barrier, results)
    workers = [ctx.Process(target=_race_worker, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        for n in range(rounds):
            if n % 2:  # a lock left by a killed run on this machine: both take it over
                host, boot_id, namespace = process_space()
                put_lock(lake, thief(pid=dead_pid(), host=host, boot_id=boot_id, pid_ns=namespace))
            barrier.wait()
            barrier.wait()
            got = sorted([results.get(timeout=60), results.get(timeout=60)])
            winners = [won for _, won, _ in got]
            assert [r for r, _, _ in got] == [n, n]
            assert winners.count(True) == 1, f"round {n}: {got}"
            assert "is in use by `harvester race-" in next(e for _, w, e in got if not w)
            barrier.wait()
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    assert [w.exitcode for w in workers] == [0, 0]
    assert lock_bytes(lake) is None


def test_two_processes_racing_never_both_take_the_lock(tmp_path: Path) -> None:
    race(Lake.open(str(tmp_path / "lake")), {}, rounds=120, settle=0.0)


def test_two_processes_racing_on_s3_never_both_take_the_lock(
    moto_s3: MotoS3, s3_lake_uri: str
) -> None:
    options = moto_s3.storage_options()
    race(Lake.open(s3_lake_uri, options), options, rounds=16, settle=0.1)


# -- a real harvest whose lock is stolen ------------------------------------------------------
@pytest.fixture(scope="module")
def small_sim() -> Iterator[SimHandle]:
    with run_simulator_process(
        "--records", "3000", *RANGE, "--max-window", WINDOW, "--seed", "61", "--admin"
    ) as sim:
        yield sim


def commit_records(out: Path) -> dict[str, tuple[int, int]]:
    """Every commit record of the lake (markers, manifests, completion), with mtime and size."""
    harvest = out / "_harvest"
    paths = [*harvest.glob("shards/*.json"), *harvest.glob("partitions/*.json")]
    paths += [p for p in (harvest / "complete.json", harvest / "plan.json") if p.exists()]
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in paths}


def wait_until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.02)


def test_a_harvest_whose_lock_is_stolen_stops_before_its_next_commit(
    small_sim: SimHandle, tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    dates = ("--from", "2019-01-01", "--to", "2019-02-28")
    proc = subprocess.Popen(
        harvest_cmd(small_sim.url, str(out), *dates, "--rate", "15", "--concurrency", "1"),
        env=SMALL_SHARDS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        shards = out / "_harvest" / "shards"
        wait_until(lambda: len(list(shards.glob("*.json"))) >= 3, "three committed shards")
        lake = Lake.open(str(out))
        stolen = put_lock(lake, thief())  # another run took the lake over
        at_steal = commit_records(out)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 4, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "lost its lock to `harvester refresh` (pid 1 on thief-host)" in lines[0]
    assert lines[0].endswith("stopping before writing")
    after = commit_records(out)
    # The fence reads the lock right before each marker: at most the one write that had
    # already passed its check when the lock was taken can land, and nothing after it.
    changed = {name for name in after if at_steal.get(name) != after[name]}
    assert len(changed) <= 1, changed
    assert "complete.json" not in after
    plan = HarvestState(lake).load_plan()
    assert plan is not None and len(after) < len(plan.shards)  # much was left to do
    assert lock_bytes(lake) == stolen  # the loser neither renewed nor removed the lock

    # Once the other run is gone, the same command finishes the lake, equal to the source.
    lake.delete(LOCK)
    result = run_harvest(small_sim.url, str(out), *dates, env=SMALL_SHARDS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_lake_equals_truth(lake, small_sim.truth())


def test_a_compaction_whose_lock_is_stolen_writes_nothing(
    small_sim: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harvester import cli
    from harvester.storage import commit

    out = tmp_path / "lake"
    dates = ("--from", "2019-01-01", "--to", "2019-02-28")
    result = run_harvest(small_sim.url, str(out), *dates, env=SMALL_SHARDS)
    assert result.returncode == 0, result.stdout + result.stderr
    lake = Lake.open(str(out))

    def files() -> dict[str, tuple[int, int]]:
        paths = [p for p in out.rglob("*") if p.is_file() and p.name != "lock.json"]
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in paths}

    before = files()
    read_files = commit.read_files

    def steal_then_read(*args: Any, **kwargs: Any) -> Any:
        put_lock(lake, thief())  # taken over while compaction reads its first partition
        return read_files(*args, **kwargs)

    monkeypatch.setattr("harvester.storage.rewrite.read_files", steal_then_read)
    assert cli.main(["compact", "--out", str(out)]) == 4
    assert files() == before, "a compaction that lost its lock wrote or deleted files"
    assert LockRecord.parse(lock_bytes(lake) or b"") is not None  # the thief's, kept
