"""Progress reporting as a callback, so stages never draw anything themselves.

A stage that does long work takes ``progress: Progress | None`` and reports
through it::

    with start(progress, "SIFT matching", total=len(tasks)) as advance:
        for result in results:
            advance(1)

``Progress`` is any callable ``(label, total, done=0) -> context manager``
whose ``__enter__`` returns ``advance(n)``. ``None`` means silent. The rich
progress bar the CLI shows lives in :mod:`bpcr.display`; a notebook can pass
its own (tqdm, a logger) with the same shape.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, Protocol

Advance = Callable[[int], None]


class Progress(Protocol):
    def __call__(self, label: str, total: int, done: int = 0) -> ContextManager[Advance]: ...


@contextmanager
def silent(label: str, total: int, done: int = 0) -> Iterator[Advance]:
    """The progress that shows nothing."""
    yield lambda n=1: None


def start(progress: Progress | None, label: str, total: int, done: int = 0) -> ContextManager[Advance]:
    """``progress(label, total, done)``, or :func:`silent` when ``progress`` is None."""
    return (progress or silent)(label, total, done)
