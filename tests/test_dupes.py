"""``ops.dupes.DuplicateFinder``: the keys seen more than once, each with every file it was
seen in, against a plain Python count of the same ids."""

from __future__ import annotations

import random
from collections import defaultdict

import pyarrow as pa
import pytest

from harvester.ops.dupes import DuplicateFinder, id_keys


@pytest.mark.parametrize("seed", range(6))
def test_the_finder_names_every_repeated_key_and_its_files(seed: int) -> None:
    rng = random.Random(seed)
    pool = [f"{rng.getrandbits(128):032x}" for _ in range(400)] + ["not-hex-1", "not-hex-2"]
    files = [[rng.choice(pool) for _ in range(rng.randrange(0, 120))] for _ in range(7)]
    files[0] += [None]  # type: ignore[list-item]  # nulls are no id
    seen: defaultdict[int, list[int]] = defaultdict(list)
    with DuplicateFinder() as finder:
        for number, ids in enumerate(files):
            array = pa.array(ids, pa.string())
            finder.add(number, array)
            for key in id_keys(array.drop_null()).to_pylist():
                seen[key].append(number)
        found = finder.candidates()
    want = {k: sorted(v) for k, v in seen.items() if len(v) > 1}
    assert want, "the draw repeats some ids"
    assert {k: sorted(v) for k, v in found.items()} == want
