"""The jobs: each command's run over one session (``session``): the plan (``planner``),
the pipeline that fetches and commits shards (``pipeline``, ``sink``), the harvest, the
refresh and its decision (``decision``, ``reconcile``), and the run report (``report``)."""
