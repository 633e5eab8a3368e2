"""harvester: the USPTO Office Action Rejection API v2 as a Hive-partitioned Parquet lake.

``__version__`` is the one place the version is written: ``pyproject.toml`` reads it from
here (``[tool.setuptools.dynamic]``), so the installed metadata and ``harvester --version``
cannot disagree. ``DISTRIBUTION`` is the name the project is installed and published under
(``pipx install uspto-oa-harvester``); the import package and the command stay
``harvester``, because ``harvester`` on the public index is another project.
"""

__version__ = "0.1.0"
DISTRIBUTION = "uspto-oa-harvester"
