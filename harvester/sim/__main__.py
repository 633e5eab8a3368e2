"""``python -m harvester.sim`` is ``harvester simulate``."""

from harvester.sim.cli import main

raise SystemExit(main())
