"""The order ``make test`` hands test files to its xdist workers: the long files first.

xdist's ``--dist loadfile`` keeps a file on one worker (its module-scoped fixtures, a
harvested lake or a Spark session, are built once) but hands out the files with the most
tests first, so a file of a few long tests (an outage of three minutes) can start last and
hold the run up at the end. ``LongFirstScheduling`` hands out ``LONG_FILES`` first, in
that order (longest first, from ``--durations``), then the rest as xdist would. Only the
order changes: a file that is missing here, or named here and gone, still runs or is
skipped as before.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadFileScheduling

# Roughly the files' total seconds, longest first (pytest --durations, four workers on two
# loaded cores): the end-to-end files, which run the CLI and the simulator as processes.
LONG_FILES = (
    "tests/test_foreign_files.py",
    "tests/test_long_haul.py",
    "tests/test_season.py",
    "tests/test_coverage.py",
    "tests/test_refresh_e2e.py",
    "tests/test_ops_s3.py",
    "tests/test_harvest_e2e.py",
    "tests/test_reload.py",
    "tests/test_sim_facts.py",
    "tests/test_change_feed.py",
    "tests/test_service.py",
    "tests/test_verify_deep.py",
    "tests/test_lake_preflight.py",
    "tests/test_refresh_decision.py",
    "tests/test_secrets.py",
    "tests/test_spark.py",
    "tests/test_show.py",
    "tests/test_ops_compact.py",
    "tests/test_checkpoint.py",
    "tests/test_lock.py",
    "tests/test_output.py",
    "tests/test_source_binding.py",
    "tests/test_reader_view.py",
    "tests/test_ops_verify.py",
    "tests/test_quarantine_counts.py",
    "tests/test_harvest_s3.py",
    "tests/test_bench_smoke.py",
    "tests/test_ops_progress.py",
    "tests/test_ops_plan.py",
    "tests/test_file_grain.py",
    "tests/test_wheel_install.py",
)


class LongFirstScheduling(LoadFileScheduling):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ordered = False

    def _assign_work_unit(self, node: Any) -> None:
        if not self._ordered:
            self._ordered = True
            for scope in reversed(LONG_FILES):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
        super()._assign_work_unit(node)
