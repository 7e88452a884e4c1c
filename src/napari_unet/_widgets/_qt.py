"""Small Qt helpers shared by the widgets: worker jobs, a progress row, messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, QSize, Qt, Signal
from qtpy.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..errors import Cancelled
from ..progress import CancelToken
from ._session import session_for, unwrap_viewer


class Relay(QObject):
    """Carries progress from a worker thread to the GUI thread (queued signal delivery)."""

    progress = Signal(int, int)
    report = Signal(object)


class Jobs:
    """A widget's link to its workers: progress relay, cancel tokens, and delivery guards.

    The relay has no Qt parent, so it is not deleted with the widget: a worker that is
    still running when its dock widget or the viewer closes reports into a live object.
    When the widget is destroyed (the viewer closed) its jobs are cancelled, its session
    slots are disconnected, a job that held the session frees it, and nothing a worker
    returns afterwards reaches the widget: its Qt children are gone, and an exception in a
    slot makes PyQt abort the whole process (napari, or the Jupyter kernel).
    """

    def __init__(self, widget: QWidget, session: Any) -> None:
        self.relay = Relay()
        self.tokens: list[CancelToken] = []
        self.session = session
        self.alive = True
        #: Workers that run on behalf of the session's one job (not background saves).
        self.holding: set[Any] = set()
        self._listening: list[tuple[Any, Callable]] = []
        widget.destroyed.connect(self._destroyed)

    def new_token(self) -> CancelToken:
        token = CancelToken()
        self.tokens.append(token)
        return token

    def progress(self, done: int, total: int) -> None:
        self.relay.progress.emit(done, total)

    def report(self, item: Any) -> None:
        self.relay.report.emit(item)

    def cancel_all(self, *_: Any) -> None:
        for token in self.tokens:
            token.cancel()

    def done(self) -> None:
        self.tokens.clear()

    def listen(self, signal: Any, slot: Callable) -> None:
        """Connect a session signal to ``slot`` for as long as the widget lives."""
        signal.connect(slot)
        self._listening.append((signal, slot))

    def _destroyed(self, *_: Any) -> None:
        self.alive = False
        self.cancel_all()
        for signal, slot in self._listening:
            signal.disconnect(slot)
        self._listening.clear()
        if self.holding:
            self.holding.clear()
            self.session.end()

    def _delivered(self, callback: Callable) -> Callable:
        """``callback``, dropped once the widget is gone."""
        def deliver(*args: Any) -> None:
            if self.alive:
                callback(*args)
        return deliver

    def start(self, func: Callable[..., Any], *, on_returned: Callable[[Any], None],
              on_error: Callable[[BaseException], None], on_finished: Callable[[], None],
              holds_session: bool = True):
        """Run ``func`` in a napari thread worker; errors go to ``on_error``, not a
        traceback. ``holds_session``: the job is the session's one job (the session is
        freed should the widget be destroyed before it ends)."""
        worker = create_worker(func, _start_thread=False, _ignore_errors=True)
        if holds_session:
            self.holding.add(worker)
            worker.finished.connect(lambda: self.holding.discard(worker))
        worker.returned.connect(self._delivered(on_returned))
        worker.errored.connect(self._delivered(on_error))
        worker.finished.connect(self._delivered(on_finished))
        worker.start()
        return worker


def report_error(exc: BaseException, what: str) -> str:
    """Show a failure as a notification; returns the status line for the widget."""
    if isinstance(exc, Cancelled):
        show_info(f"{what} cancelled; nothing was changed")
        return f"{what} cancelled."
    show_error(f"{what} failed: {exc}")
    return f"{what} failed: {exc}"


class ProgressRow(QWidget):
    """A progress bar with a Cancel button next to it."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.cancel_button)

    def set_progress(self, done: int, total: int) -> None:
        self.bar.setValue(int(1000 * done / total) if total else 0)

    def running(self, on: bool) -> None:
        self.cancel_button.setEnabled(on)
        if on:
            self.bar.setValue(0)


class ScrollPanel(QScrollArea):
    """A dock's controls, scrolled vertically when the dock is shorter than they are.

    napari stacks the plugin's docks in one column and Qt's dock area may shrink each to
    its minimum size hint, which for word-wrapped labels is short of the height they take
    at the dock's width: the rows were then squashed over each other and text cut off
    (Segment above Correct-and-fine-tune at 1060 px). Here the controls keep their full
    height and scroll when the dock is shorter. The dock's minimum is that full height (up
    to :data:`MIN_LINES` lines of text, so that two docks stacked in an 800 px window still
    fit) and its maximum too, so a dock leaves the room it cannot use to the next one.
    """

    #: The most a dock's minimum height may be, in lines of text (Segment's controls fit).
    MIN_LINES = 22

    def __init__(self, content: QWidget, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWidget(content)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        content.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the controls' height changed: so did the dock's hints
        return super().eventFilter(watched, event)

    def _extra_width(self) -> int:
        """The scroll bar's width and the frame's (napari's style draws one)."""
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def _full_height(self) -> int:
        """The controls' height at the width they have beside a scroll bar, and the frame's."""
        content = self.widget()
        height = content.sizeHint().height()
        if content.hasHeightForWidth():
            width = self.width() - self._extra_width() if self.isVisible() else -1
            height = max(height, content.heightForWidth(max(width, content.sizeHint().width())))
        return height + 2 * self.frameWidth()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        """The controls' full height at their width: what the dock asks for."""
        return QSize(self.widget().sizeHint().width() + self._extra_width(), self._full_height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        """As narrow as the controls (no horizontal scrolling); as tall as all of them, up
        to :data:`MIN_LINES` lines of text."""
        return QSize(self.widget().minimumSizeHint().width() + self._extra_width(),
                     min(self._full_height(), self.MIN_LINES * self.fontMetrics().height()))


def scrolled_layout(widget: QWidget) -> QVBoxLayout:
    """The layout for ``widget``'s controls (a dock widget's): on a panel in a
    :class:`ScrollPanel` that fills ``widget``, which is then never taller than they are."""
    panel = QWidget()
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(ScrollPanel(panel))
    widget.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
    return QVBoxLayout(panel)


class JobWidget(QWidget):
    """Base of the dock widgets: the viewer's session, and one worker job at a time.

    Holds the running worker, its cancel token, the :class:`Jobs` relay and the
    :class:`ProgressRow` (whose Cancel button cancels the job). Subclasses set
    ``self.status`` (a label) and call :meth:`finish_job` when their job is over.
    """

    def __init__(self, napari_viewer: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = unwrap_viewer(napari_viewer)
        self.session = session_for(napari_viewer)
        self.worker = None
        self._token: Optional[CancelToken] = None
        self.jobs = Jobs(self, self.session)
        self.progress = ProgressRow()
        self.jobs.relay.progress.connect(self.progress.set_progress)
        self.progress.cancel_button.clicked.connect(self.cancel)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def cancel(self) -> None:
        if self._token is not None:
            self._token.cancel()
            self.status.setText("Cancelling...")

    def event(self, event: QEvent) -> bool:
        """Closing the panel (napari takes the widget out of its dock) cancels its job:
        work nobody can see, follow or cancel would keep the other panel's buttons off."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None and self.running:
            self.cancel()
        return super().event(event)

    def finish_job(self) -> None:
        """The job is over (done, failed or cancelled): free the session for the next one."""
        self.worker = None
        self._token = None
        self.jobs.done()
        self.progress.running(False)
        self.session.end()


#: Longest layer name a combo box or status line shows whole (characters).
NAME_LIMIT = 40


def elide_middle(name: str, limit: int = NAME_LIMIT) -> str:
    """``name`` shortened in the middle to ``limit`` characters: long layer names often
    differ only at their end ("... ch1", "... labels"), which cutting the end would hide."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return f"{name[:head]}\u2026{name[len(name) - (limit - 1 - head):]}"


def status_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    return label
