"""napari-unet: U-Net instance segmentation for microscopy, as a library, CLI and napari plugin.

The public API (documented in docs/api.md)::

    model = napari_unet.load_model("nuclei")
    labels = napari_unet.segment(image, model, axes="YX")
    model = napari_unet.train("data/train", preset_name="default")
    result = napari_unet.evaluate(model, "data/test")
    tuned = napari_unet.fine_tune(model, napari_unet.Correction(
        image=image, labels=corrected_labels, mask=edited_pixels))
"""

__version__ = "0.1.0"

from .corrections import Correction  # noqa: E402
from .errors import NapariUnetError  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .finetune import fine_tune  # noqa: E402
from .model import Model  # noqa: E402
from .registry import list_models, load_model, save_user_model  # noqa: E402
from .segment import segment  # noqa: E402
from .training import TrainConfig, train  # noqa: E402

__all__ = [
    "Correction",
    "Model",
    "NapariUnetError",
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
