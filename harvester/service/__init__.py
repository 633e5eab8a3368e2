"""The service side: HTTP (``client``), its waits (``backoff``), what the service was
found to do (``profile``), paging through a shard (``fetch``), the newest stamp
(``stamps``) and turning its JSON into Arrow rows (``decode``). It may read and remember
into the lake; it never decides what a job does."""
