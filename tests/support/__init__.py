"""Helpers shared by the test modules (fixtures live in ``tests/conftest.py``).

- ``harvest``: the fast test settings and running ``harvester harvest`` as a subprocess.
- ``cli``: running any ``harvester`` command, checking its exit, reading its run reports.
- ``lakecheck``: comparing a lake with the simulator's ground truth.
- ``s3server``: the moto S3 server handle used by the ``moto_s3`` fixture.

Test modules import helpers from here, never from one another.
"""
