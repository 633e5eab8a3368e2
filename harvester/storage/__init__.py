"""The lake side (``storage``: the package is not named ``lake``, which tools take for a
lake of data): the store (local disk or S3) and everything the harvester keeps in it.

``store`` owns every byte of I/O; ``state`` the records under ``_harvest/`` (plan, markers,
manifests, the service profile); ``lock`` who may write; ``writer`` and ``commit`` the
Parquet files and their replacement; ``merge``, ``quarantine``, ``schema``, ``changes``,
``quota`` and ``info`` what is built on those. Nothing here sends a request.
"""
