"""Save session... and Open session...: the Fine-tune widget's row of session buttons, and
the save after every fine-tuning round, wired to :mod:`napari_unet.sessions`.

Saves run in a worker thread beside the session's one job (a round may start while one
is being written); opening a session is the session's job, so nothing changes it while
it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Optional

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QWidget

from ..errors import NapariUnetError, SessionError
from ..sessions import SESSION_SUFFIX, SessionData, SessionFolder, check_save_target, is_session
from . import _dialogs
from ._qt import JobWidget, report_error
from ._session_file import capture, restore


class SessionPanel(QWidget):
    """The session buttons of ``host`` (a dock widget): its status line says what they
    did, and ``on_opened`` runs once an opened session is in the viewer."""

    def __init__(self, host: JobWidget, on_opened: Callable[[], None]) -> None:
        super().__init__()
        self.host = host
        self.session = host.session
        self._on_opened = on_opened
        #: Where the session is saved (set by Save session or Open session); every
        #: fine-tuning round then saves it again.
        self.folder: Optional[SessionFolder] = None
        self._save_worker = None
        self._save_again = False

        self.save_button = QPushButton("Save session...")
        self.save_button.setToolTip(
            "Save the image references, labels, corrections and model versions to a folder; "
            "after that, every fine-tuning round saves it again")
        self.open_button = QPushButton("Open session...")
        self.open_button.setToolTip("Reopen a saved session in this viewer")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.save_button)
        layout.addWidget(self.open_button)

        self.save_button.clicked.connect(self.save)
        self.open_button.clicked.connect(self.open)
        host.jobs.listen(self.session.busy_changed, self._busy_changed)

    def _busy_changed(self, what: str) -> None:
        self.open_button.setEnabled(not what)

    def _say(self, text: str) -> None:
        self.host.status.setText(text)

    # ------------------------------------------------------------------ save
    def save(self) -> bool:
        """Ask for a session folder and save to it; later rounds save there automatically."""
        if not len(self.session.versions) and not self.session.links:
            show_error("there is no session to save yet: segment an image first")
            return False
        path = _dialogs.ask_session_path(self.host, "session" + SESSION_SUFFIX)
        if path is None:
            return False
        if is_session(path):
            if not _dialogs.confirm_overwrite(self.host, path):
                return False
        else:
            try:
                check_save_target(path)
            except SessionError as exc:
                show_error(str(exc))
                self._say(str(exc))
                return False
        if self.folder is None or self.folder.path != path:
            self.folder = SessionFolder(path)
        self.save_to_folder()
        return True

    def autosave(self) -> None:
        """Save again where the session was saved or opened from (nothing if nowhere)."""
        if self.folder is not None:
            self.save_to_folder(auto=True)

    def save_to_folder(self, auto: bool = False) -> None:
        """Save the session to its folder in a worker thread (one save at a time: a save
        asked for while another one runs follows it)."""
        if self._save_worker is not None:
            self._save_again = True
            return
        folder = self.folder
        job = partial(folder.save, capture(self.session))
        self._save_worker = self.host.jobs.start(
            job, on_returned=partial(self._saved, folder, auto), on_error=self._save_failed,
            on_finished=self._save_finished, holds_session=False)

    def _saved(self, folder: SessionFolder, auto: bool, _index: Any) -> None:
        text = f"Session {'auto-' if auto else ''}saved to {folder.path}"
        show_info(text)
        self._say(text + ".")  # the round's report stays in its own line

    def _save_failed(self, exc: BaseException) -> None:
        self._say(report_error(exc, "Saving the session") +
                  " The previous save of the session is unchanged.")

    def _save_finished(self) -> None:
        self._save_worker = None
        if self._save_again:
            self._save_again = False
            self.save_to_folder(auto=True)

    # ------------------------------------------------------------------ open
    def open(self) -> bool:
        """Ask for a session folder and open it in this viewer, replacing the current
        session (tracked labels, corrections, model versions); False if refused."""
        if self.session.busy or self._save_worker is not None:
            what = self.session.busy or "saving the session"
            show_info(f"napari-unet is busy ({what}); open the session when it is done")
            return False
        path = _dialogs.ask_session_folder(self.host)
        if path is None:
            return False
        has_state = len(self.session.versions) or self.session.links or len(self.session.store)
        if has_state and not _dialogs.confirm_replace_session(self.host):
            return False
        if not self.session.begin("opening a session"):  # a job started meanwhile
            show_info(f"napari-unet is busy ({self.session.busy}); open the session when it "
                      "is done")
            return False
        folder = SessionFolder(path)
        self._say(f"Opening session {folder.path}...")
        self.host.worker = self.host.jobs.start(
            folder.load, on_returned=partial(self._opened, folder),
            on_error=self._open_failed, on_finished=self.host.finish_job)
        return True

    def _open_failed(self, exc: BaseException) -> None:
        self._say(report_error(exc, "Opening the session"))

    def _opened(self, folder: SessionFolder, data: SessionData) -> None:
        try:
            problems = restore(self.host.viewer, self.session, data)
        except (NapariUnetError, ValueError) as exc:
            self._open_failed(exc)
            return
        self.folder = folder
        text = (f"Opened session {folder.path.name}: {len(data.labels)} labels layer(s), "
                f"{len(data.versions)} model version(s). Fine-tuning rounds save it again.")
        if problems:
            show_warning("; ".join(problems))
            text += " " + " ".join(problems)
        else:
            show_info(f"Session {folder.path.name} opened")
        self._say(text)
        self._on_opened()
