"""`python -m harvester` is the same as the `harvester` console script."""

from harvester.cli import main

raise SystemExit(main())
