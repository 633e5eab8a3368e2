"""`python -m harvester` is the same as the `harvester` console script."""

from harvester.cli import run

run()
