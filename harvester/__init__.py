"""harvester: the USPTO Office Action Rejection API v2 as a Hive-partitioned Parquet lake."""

__version__ = "0.1.0"
