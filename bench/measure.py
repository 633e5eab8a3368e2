"""Run one contender as a child process and measure it from outside: wall, CPU, peak RSS.

Every contender (the harvester and each peer) is a separate process started the same way,
so the numbers are comparable:

- CPU-seconds come from ``os.wait4``'s rusage: user + system of the child *and* of every
  descendant it waited for (dlt's normalize worker processes, for instance). Exact, no
  sampling error.
- Peak RSS is the larger of two readings: the largest ``VmHWM`` (the kernel's high-water
  mark of one process since its exec, read from /proc while it lives) and a psutil sampler
  summing the RSS of the whole live tree every ``SAMPLE_INTERVAL`` seconds (what a
  multi-process contender holds at once). Not ``ru_maxrss``: Linux starts a child's maxrss
  at its parent's RSS at fork, so every contender reported at least this harness's memory
  (a first full run showed the harvester at 602 MB where it held 209).
- The simulator runs in its own process and is measured separately (``cpu_seconds``), so
  its CPU is never billed to a contender.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SAMPLE_INTERVAL = 0.05


@dataclass
class Measured:
    """What one child process cost."""

    command: list[str]
    returncode: int
    wall_s: float
    cpu_user_s: float
    cpu_system_s: float
    peak_rss_bytes: int
    maxrss_bytes: int  # ru_maxrss: informational only, see run_measured
    tree_peak_rss_bytes: int  # sampled sum over the live process tree
    hwm_bytes: int = 0  # largest VmHWM (the kernel's own high-water mark) of one process
    killed: bool = False
    stdout_path: str = ""
    stderr_path: str = ""
    samples: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_system_s

    def tail(self, lines: int = 15) -> str:
        """The end of the child's stderr (and stdout), for failure messages."""
        text = ""
        for path in (self.stderr_path, self.stdout_path):
            if path and Path(path).exists():
                text += Path(path).read_text(errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])


class _TreeSampler(threading.Thread):
    """Sums the RSS of a process and its live descendants until told to stop."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.hwm = 0
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue  # a child that just ended
                self.hwm = max(self.hwm, _vm_hwm(proc.pid))
            self.peak = max(self.peak, total)
            self.samples += 1
            self._done.wait(SAMPLE_INTERVAL)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _vm_hwm(pid: int) -> int:
    """The process's peak RSS as the kernel counts it (VmHWM, since its exec), in bytes:
    exact even for peaks shorter than the sampling interval, up to the last sample."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a contender: none of the caller's harvester settings or keys
    leak in (they would silently change what is measured)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HARVESTER_") and k != "USPTO_API_KEY"
    }
    env["PYTHONUNBUFFERED"] = "1"
    # The peers run as ``python -m bench.peers...``: make the repository importable from
    # wherever the harness was started.
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def run_measured(
    command: Sequence[str],
    *,
    log_dir: Path,
    name: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800.0,
    kill_when: Callable[[], bool] | None = None,
    poll: float = 0.1,
) -> Measured:
    """Run ``command`` to its end (or until ``kill_when()`` turns true: then SIGKILL).

    ``kill_when`` is polled every ``poll`` seconds; the resume scenario uses it to kill the
    harvester half-way through, the way a crash would (no chance to save anything).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"{name}.stdout"
    stderr_path = log_dir / f"{name}.stderr"
    killed = False
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(
            list(command), stdout=out, stderr=err, env=dict(env or clean_env())
        )
        sampler = _TreeSampler(process.pid)
        sampler.start()
        deadline = started + timeout
        status = None
        usage: resource.struct_rusage | None = None
        while status is None:
            # WNOHANG polling instead of a blocking wait4: we must also watch kill_when
            # and the timeout. The rusage is only valid once the child is reaped.
            pid, raw, ru = os.wait4(process.pid, os.WNOHANG)
            if pid == process.pid:
                status, usage = raw, ru
                break
            now = time.monotonic()
            if not killed and (now > deadline or (kill_when is not None and kill_when())):
                killed = True
                # SIGKILL the whole group of descendants first, then the child itself.
                for child in _descendants(process.pid):
                    _kill(child)
                _kill(process.pid)
            time.sleep(poll)
        wall = time.monotonic() - started
        sampler.stop()
    assert usage is not None and status is not None
    process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    maxrss = usage.ru_maxrss * 1024  # Linux reports KiB
    return Measured(
        command=list(command),
        returncode=process.returncode,
        wall_s=wall,
        cpu_user_s=usage.ru_utime,
        cpu_system_s=usage.ru_stime,
        # Not ru_maxrss: Linux carries the parent's RSS at fork into the child's maxrss
        # (the exec'd image starts with the forked copy's high-water mark), so a child of
        # this harness, which holds truth digests, would report the harness's memory.
        peak_rss_bytes=max(sampler.hwm, sampler.peak),
        maxrss_bytes=maxrss,
        tree_peak_rss_bytes=sampler.peak,
        hwm_bytes=sampler.hwm,
        killed=killed,
        stdout_path=str(stdout_path),
        stderr_path=str(stderr_path),
        samples=sampler.samples,
    )


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process so far (the simulator's, to report it apart)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)
