"""Waiting for Dask futures while a Ctrl-C may ask the flow to stop.

The commands turn the first Ctrl-C into a flag (:func:`pipeline.cli.run_command`)
instead of a :class:`KeyboardInterrupt` raised at an arbitrary point inside
Dask's client code, which can end in Dask's own tracebacks.  The flows ask
the flag here, between results, and stop cleanly: the futures still pending
are cancelled and :class:`KeyboardInterrupt` is raised from the flow's own
code, every finished result kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from distributed import Future, as_completed

StopRequested = Callable[[], bool]

POLL_SECONDS = 0.05
"""How often a waiting flow asks whether it should stop."""


def never() -> bool:
    """The stop flag of a flow that nobody interrupts."""
    return False


def stop_point(stop_requested: StopRequested) -> None:
    """Between two steps of a flow: raise :class:`KeyboardInterrupt` if a stop was asked."""
    if stop_requested():
        raise KeyboardInterrupt


def each_completed(running: as_completed, stop_requested: StopRequested = never,
                   on_poll: Callable[[], None] | None = None) -> Iterator[Future]:
    """Yield the futures of ``running`` as they finish, until none is left.

    ``running`` may grow while it is iterated (``running.add``).  When
    ``stop_requested()`` says True, the futures not yet yielded are
    cancelled and :class:`KeyboardInterrupt` is raised.  ``on_poll`` is
    called while waiting (e.g. to move a progress bar).
    """
    while not running.is_empty():
        if stop_requested():
            pending = list(running.futures)
            if pending:
                pending[0].client.cancel(pending)
            raise KeyboardInterrupt
        if running.has_ready():
            yield next(running)
        else:
            if on_poll is not None:
                on_poll()
            time.sleep(POLL_SECONDS)


def gather(futures: list[Future], stop_requested: StopRequested = never) -> list:
    """The results of ``futures``, in order, raising the first failure as soon as it comes;
    a stop cancels the rest (:class:`KeyboardInterrupt`)."""
    for done in each_completed(as_completed(futures), stop_requested):
        if done.status == "error":
            done.result()
    return futures[0].client.gather(futures) if futures else []


def result(future: Future, stop_requested: StopRequested = never,
           on_poll: Callable[[], None] | None = None):
    """``future.result()``, or :class:`KeyboardInterrupt` (the future cancelled) on a stop."""
    for done in each_completed(as_completed([future]), stop_requested, on_poll):
        return done.result()
