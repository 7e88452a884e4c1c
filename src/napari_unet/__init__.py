"""napari-unet: U-Net instance segmentation for microscopy, as a library, CLI and napari plugin.

The public API (documented in docs/api.md)::

    model = napari_unet.load_model("nuclei")
    labels = napari_unet.segment(image, model, axes="YX")  # options: SegmentOptions
    model = napari_unet.train("data/train", preset_name="default")
    result = napari_unet.evaluate(model, "data/test")
    tuned = napari_unet.fine_tune(model, napari_unet.Correction(
        image=image, labels=corrected_labels, mask=edited_pixels))
"""

from ._package import warn_if_clashing
from ._version import __version__
from .corrections import Correction
from .errors import NapariUnetError
from .evaluation import evaluate
from .finetune import fine_tune
from .model import Model
from .options import SegmentOptions
from .registry import list_models, load_model, save_user_model
from .segment import segment
from .training import TrainConfig, train

warn_if_clashing()  # the unrelated `napari-unet` distribution shares our import name

__all__ = [
    "Correction",
    "Model",
    "NapariUnetError",
    "SegmentOptions",
    "TrainConfig",
    "__version__",
    "evaluate",
    "fine_tune",
    "list_models",
    "load_model",
    "save_user_model",
    "segment",
    "train",
]
