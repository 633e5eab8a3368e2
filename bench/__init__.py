"""Benchmarks: the harvester against its peers and against the API's own limit.

Run with ``make bench`` (or ``python -m bench``); see ``docs/benchmarks.md``.
"""
