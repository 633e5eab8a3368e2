"""Stopping on a signal: ``SIGTERM`` and ``SIGHUP`` behave as Ctrl-C does.

systemd, Kubernetes and Airflow stop a job with ``SIGTERM`` (and a closed terminal sends
``SIGHUP``). Python's default for those is to die at once: no ``finally`` runs, so the lock
stays behind, the run report is never written and nobody is told how to resume. Here each
of them cancels the running task, as ``asyncio.run`` does for Ctrl-C: the request in flight
is abandoned, every ``finally`` and ``RunReport.kept`` runs (the lock is released, the report
saved; a merge already running in a thread is finished first, since it cannot be cut), and
``Interrupted`` reaches the command with the signal's exit code, 128 + its number.

A second signal while stopping changes nothing: the run is already on its way out, and a
scheduler that will not wait sends ``SIGKILL``, which the lake survives anyway.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from harvester.errors import EXIT_HANGUP, EXIT_INTERRUPTED, EXIT_TERMINATED, Interrupted

T = TypeVar("T")

# Ctrl-C (SIGINT) is asyncio.run's own; these two are added to it.
HANDLED: dict[signal.Signals, int] = {
    signal.SIGTERM: EXIT_TERMINATED,
    signal.SIGHUP: EXIT_HANGUP,
}


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, stopped cleanly by Ctrl-C, ``SIGTERM`` or ``SIGHUP``: raises
    ``Interrupted`` (exit 130, 143 or 129) once everything the run must do on its way out
    is done."""
    received: list[signal.Signals] = []

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: signal.Signals) -> None:
            if not received:
                received.append(signum)
                task.cancel(msg=signum.name)  # the report's ``ended_by``

        # A signal ignored when we started stays ignored: `nohup harvester ...` must go on
        # when its terminal closes (Python leaves an ignored SIGINT alone for the same reason).
        handled = [s for s in HANDLED if signal.getsignal(s) is not signal.SIG_IGN]
        for signum in handled:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await main
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:
        raise Interrupted("Ctrl-C (SIGINT)", EXIT_INTERRUPTED) from None
    except asyncio.CancelledError:
        if not received:
            raise
        raise Interrupted(received[0].name, HANDLED[received[0]]) from None


async def to_thread_to_the_end(func: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread(func, *args)`` that a cancel (a signal) does not cut short: a
    commit or a merge under way in its thread is awaited to its end, and only then does the
    cancel go on. Otherwise the run would release its lock and save its report while the
    thread still writes, unfenced, and the report would miss what it wrote."""
    work = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await work  # cannot be cut: let it end, then stop
        raise
