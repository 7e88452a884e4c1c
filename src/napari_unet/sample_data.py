"""Small real sample images shipped inside the package (origins in samples/ATTRIBUTION.md).

They let the napari sample menu, the CLI demo and the tests run offline with real data.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import ImageReadError
from .io import ImageData, read_image

#: Sample name -> file in ``napari_unet/samples``.
SAMPLES: dict[str, str] = {
    "nuclei_fluo": "nuclei_fluo.tif",  # 2-D fluorescence nuclei, uint8
    "nuclei_fluo_labels": "nuclei_fluo_labels.tif",  # its ground-truth instance labels
    "em_membrane": "em_membrane.tif",  # 2-D electron microscopy, uint8
    "embryo_3d": "embryo_3d.tif",  # 3-D nuclei, ZYX uint16, relative Z spacing 2.18
}


def sample_path(name: str) -> Path:
    """Path of the bundled sample ``name`` (one of :data:`SAMPLES`)."""
    if name not in SAMPLES:
        raise ImageReadError(
            f"there is no sample called {name!r}; choose one of: {', '.join(SAMPLES)}"
        )
    path = Path(str(files("napari_unet") / "samples" / SAMPLES[name]))
    if not path.is_file():
        raise ImageReadError(
            f"sample {name!r} is missing from the installed package ({path}); reinstall "
            "napari-unet (pip install --force-reinstall napari-unet)"
        )
    return path


def load_sample(name: str) -> ImageData:
    """Read the bundled sample ``name`` with its axes and calibration."""
    return read_image(sample_path(name))
