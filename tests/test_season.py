"""The refresh exact across a season: fixed seeds of ``tests.season``'s random sequences.

Each seed is a sequence of 16 steps (changes of every kind, a reload followed by more
changes, spurious empty answers, a SIGKILL mid-refresh then the same command again,
``compact``, ``verify --repair``), checked after every step row for row against the
simulator's truth. ``make soak SEEDS=N`` runs N more seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.season import KINDS, STEPS, draw, run_season

CI_SEEDS = (1, 2)


def test_every_sequence_draws_every_kind_of_step_and_is_reproducible() -> None:
    for seed in range(50):
        sequence = draw(seed)
        assert len(sequence) == STEPS >= 15
        assert {step.kind for step in sequence} == set(KINDS)
        assert [str(s) for s in sequence] == [str(s) for s in draw(seed)]


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_a_season_of_refreshes_keeps_the_lake_equal_to_the_source(
    seed: int, tmp_path: Path
) -> None:
    run_season(seed, workdir=tmp_path)
