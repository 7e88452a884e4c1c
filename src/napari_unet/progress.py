"""Progress reporting and cooperative cancellation for long work.

The core never talks to a GUI: it calls a plain ``(done, total)`` callback and checks a
:class:`CancelToken` between units of work (tiles, planes, training steps).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Optional

from .errors import Cancelled

ProgressCallback = Callable[[int, int], None]


class CancelToken:
    """A thread-safe flag a GUI or a signal handler sets to stop work between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user; nothing was changed")


def check_cancel(token: Optional[CancelToken]) -> None:
    """Raise :class:`Cancelled` when ``token`` is set; a ``None`` token never cancels."""
    if token is not None:
        token.raise_if_cancelled()


def report(callback: Optional[ProgressCallback], done: int, total: int) -> None:
    """Call ``callback(done, total)`` when one was given."""
    if callback is not None:
        callback(done, total)
