"""Operating a lake: ``plan``, ``status``, ``verify`` and ``compact``.

Each command is one module with one entry point that the CLI calls, returning a result
object the CLI prints; none of them knows about argparse. They share ``storage.info`` for
opening an existing lake and reading Parquet footers.
"""
