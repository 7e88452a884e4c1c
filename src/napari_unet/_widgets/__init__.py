"""napari dock widgets: Segment, and Correct-and-fine-tune.

The widgets are thin: compute goes through the core API in thread workers
(:mod:`._jobs`), state lives in Qt-free classes (:mod:`._state`, :mod:`._session`).
"""

from ._finetune import FineTuneWidget
from ._segment import SegmentWidget

__all__ = ["FineTuneWidget", "SegmentWidget"]
