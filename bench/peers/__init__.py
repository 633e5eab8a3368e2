"""The peers the harvester is measured against, each runnable as its own process.

Every peer writes a small JSON result (rows, requests, bytes received, timings) so the
harness reads all contenders the same way; CPU and memory are measured from outside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RECORDS_PATH = "/api/v1/patent/oa/oa_rejections/v2/records"
CRITERIA = "*:*"


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write the peer's result atomically, so a killed peer never leaves half a file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, target)
