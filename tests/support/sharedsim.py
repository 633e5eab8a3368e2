"""The simulator the tests share (``tests/conftest.py``'s ``shared_sim``, one process per
xdist worker): for tests that only read from it, with no mutation, no faults and no corpus
of their own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harvester.sim.testing import SimHandle
from tests.support.harvest import RANGE, WINDOW

# RANGE's two months, 1500 rows (~25 a day), windows of WINDOW, the admin routes on for
# truth and stats. A test that needs the same corpus in a second process (another port,
# another option) starts one with these arguments.
SHARED_SIM_ARGS = ("--records", "1500", *RANGE, "--max-window", WINDOW, "--seed", "210", "--admin")


class ReadOnlySim(SimHandle):
    """A shared simulator: its truth and stats can be read, nothing in it changed. Its
    request counter counts every test's requests: compare ``stats()`` before and after."""

    def mutate(self, **spec: Any) -> dict[str, Any]:
        raise AssertionError("shared_sim is read-only: start a simulator of your own to mutate")

    def faults(self, rate: float, kinds: Sequence[str] | None = None) -> None:
        raise AssertionError("shared_sim is read-only: start a simulator of your own for faults")

    def quota_reset(self) -> None:
        raise AssertionError("shared_sim is read-only: start a simulator of your own")
