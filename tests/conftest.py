"""Shared test set-up.

torch is imported before anything can import Qt (peer plugins had trouble with the other
order; see the project's stack notes), so the order is fixed here once for all tests.
"""

import torch  # noqa: I001  (must come first, before any Qt import)

import os
import shutil
from pathlib import Path

import pytest

import napari_unet

torch.set_num_threads(2)  # the build machines have 2 cores; more threads only thrash

REPO = Path(__file__).resolve().parents[1]


def _display_problem() -> str | None:
    if os.environ.get("DISPLAY") or shutil.which("Xvfb"):
        return None
    return (
        "!!! WARNING: no DISPLAY and no Xvfb: napari viewer tests will fail "
        "(QT_QPA_PLATFORM=offscreen is not enough for napari's OpenGL canvas). "
        "Install Xvfb (apt-get install xvfb) or run scripts/test.sh as root. !!!"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    problem = _display_problem()
    return [problem] if problem else []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat the warning at the end: ``-q`` hides the header, and failures come last."""
    problem = _display_problem()
    if problem:
        terminalreporter.write_line(problem, red=True, bold=True)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real images the tests use: ``tests/data``, a few files and crops of the shared data
    set in its layout (see tests/data/README.md), so a fresh clone tests with nothing beside it."""
    return REPO / "tests" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The whole shared data set ($NAPARI_UNET_DATA, else <repo>/../shared/data), for the few
    tests about the data set itself; they skip, saying why, where it is absent."""
    path = Path(os.environ.get("NAPARI_UNET_DATA") or REPO.parent / "shared" / "data")
    if not (path / "README.md").is_file():
        pytest.skip(f"needs the full shared data set, not found at {path}; set NAPARI_UNET_DATA "
                    "to the folder that holds dsb2018_fluo/, isbi2012_em_membrane/ and "
                    "qcanet_mouse_embryo_3d/")
    return path


@pytest.fixture(scope="module")
def tiny_model():
    """A small, untrained U-Net: fast enough for GUI tests, honest about what it learns."""
    cfg = napari_unet.config.preset("default")
    cfg.network.base = 8
    cfg.network.depth = 3
    return napari_unet.Model.create(cfg, name="tiny", seed=0)
