"""Progress reporting as a callback, so stages never draw anything themselves.

A stage that does long work takes ``progress: Progress | None`` and reports
through it::

    with start(progress, "SIFT matching", total=len(tasks)) as advance:
        for result in results:
            advance(1)

``Progress`` is any callable ``(label, total, done=0) -> context manager``
whose ``__enter__`` returns ``advance(n)``. ``None`` means silent. The rich
progress bar the CLI shows lives in :mod:`bpcr.cli.display`; a notebook can pass
its own (tqdm, a logger) with the same shape.

A stage may also pass a short live status with the count, ``advance(n,
note="loss 0.1234")`` (training shows its running loss so). An ``advance``
that takes no ``note`` keyword still works: :func:`start` drops the note for it.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, Protocol

Advance = Callable[..., None]  # advance(n: int = 1, note: str | None = None)


class Progress(Protocol):
    def __call__(self, label: str, total: int, done: int = 0) -> ContextManager[Advance]: ...


@contextmanager
def silent(label: str, total: int, done: int = 0) -> Iterator[Advance]:
    """The progress that shows nothing."""
    yield lambda n=1, note=None: None


@contextmanager
def start(progress: Progress | None, label: str, total: int, done: int = 0) -> Iterator[Advance]:
    """``progress(label, total, done)``, or :func:`silent` when ``progress`` is None.

    The ``advance`` it yields always takes ``note=``; the note reaches the
    progress's own ``advance`` only when that one takes it.
    """
    with (progress or silent)(label, total, done) as advance:
        if _takes_note(advance):
            yield advance
        else:
            yield lambda n=1, note=None: advance(n)


def _takes_note(advance: Callable) -> bool:
    try:
        params = inspect.signature(advance).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature (list.append): count only
        return False
    return any(p.name == "note" or p.kind is p.VAR_KEYWORD for p in params)
