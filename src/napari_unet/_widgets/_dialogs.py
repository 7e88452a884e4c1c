"""Modal questions, kept in one module so tests can answer them without a human."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from qtpy.QtWidgets import QFileDialog, QInputDialog, QMessageBox, QWidget

from ..bioimageio import package_path
from ..sessions import SESSION_SUFFIX


def ask_save_path(parent: Optional[QWidget], suggestion: str) -> Optional[Path]:
    """A TIFF path to write, or None. Overwriting is asked separately (see confirm_overwrite)."""
    path, _ = QFileDialog.getSaveFileName(
        parent, "Export labels as TIFF", suggestion, "TIFF (*.tif *.tiff)",
        options=QFileDialog.Option.DontConfirmOverwrite,
    )
    if not path:
        return None
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        path = path.with_name(path.name + ".tif")
    return path


def ask_package_path(parent: Optional[QWidget], suggestion: str) -> Optional[Path]:
    """A bioimage.io package (.zip) to write, or None; overwriting is asked separately."""
    path, _ = QFileDialog.getSaveFileName(
        parent, "Export as a bioimage.io model", suggestion, "bioimage.io packages (*.zip)",
        options=QFileDialog.Option.DontConfirmOverwrite,
    )
    return package_path(path) if path else None


def confirm_overwrite(parent: Optional[QWidget], path: Path) -> bool:
    answer = QMessageBox.question(
        parent, "Replace file?", f"{path.name} already exists in {path.parent}.\nReplace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def ask_model_file(parent: Optional[QWidget]) -> Optional[Path]:
    path, _ = QFileDialog.getOpenFileName(
        parent, "Load a napari-unet model", "",
        "napari-unet models (*.safetensors *.zip);;bioimage.io packages (*.zip)"
    )
    return Path(path) if path else None


def ask_model_name(parent: Optional[QWidget], suggestion: str) -> Optional[str]:
    name, ok = QInputDialog.getText(parent, "Save model as", "Model name:", text=suggestion)
    name = name.strip()
    return name if ok and name else None


def ask_session_path(parent: Optional[QWidget], suggestion: str) -> Optional[Path]:
    """A session folder to save to (``.unet-session`` appended when missing), or None."""
    path, _ = QFileDialog.getSaveFileName(
        parent, "Save session as", suggestion, f"napari-unet sessions (*{SESSION_SUFFIX})",
        options=QFileDialog.Option.DontConfirmOverwrite,
    )
    if not path:
        return None
    path = Path(path)
    if not path.name.endswith(SESSION_SUFFIX):
        path = path.with_name(path.name + SESSION_SUFFIX)
    return path


def ask_session_folder(parent: Optional[QWidget]) -> Optional[Path]:
    """A saved session's folder to open, or None."""
    path = QFileDialog.getExistingDirectory(parent, f"Open a session ({SESSION_SUFFIX} folder)")
    return Path(path) if path else None


def confirm_replace_session(parent: Optional[QWidget]) -> bool:
    answer = QMessageBox.question(
        parent, "Replace the session?",
        "Opening a session replaces this viewer's tracked labels, corrections and model "
        "versions.\nModel versions you have not saved are lost. Continue?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def confirm_open_image(parent: Optional[QWidget], path: Path,
                       folder: Optional[Path] = None) -> bool:
    """Whether to open ``path``, an image a session names outside its own folder."""
    where = f"the session folder {folder}" if folder else "the session folder"
    answer = QMessageBox.question(
        parent, "Open an image outside the session?",
        f"The session names the image\n{path}\nwhich is outside {where}.\n"
        "Open it only if you trust where the session came from. Open it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes
