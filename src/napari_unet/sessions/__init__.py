"""The session file format: a viewer's interactive work (image references, labels with
their edit and review masks, corrections, model versions) saved to a folder and read back.

Qt-free and napari-free, tested without a viewer. The widgets copy their state into a
:class:`SessionData` and back (``napari_unet._widgets._session_file``); this package
writes and reads it:

- :mod:`.records`: the data (:class:`SessionData` and the records it holds);
- :mod:`.index`: ``session.json`` (what it names, the limits it is read within);
- :mod:`.arrays`: the ``.npz`` files (headers checked before anything is decompressed);
- :mod:`.checks`: what a session must hold to be restored whole;
- :mod:`.folder`: :class:`SessionFolder`, atomic saves and checked loads.
"""

from .checks import check
from .folder import SessionFolder, check_save_target, is_session
from .index import FORMAT_NAME, FORMAT_VERSION, INDEX, SESSION_SUFFIX
from .records import ImageRecord, LabelsRecord, ModelVersion, SegmentSettings, SessionData

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDEX",
    "SESSION_SUFFIX",
    "ImageRecord",
    "LabelsRecord",
    "ModelVersion",
    "SegmentSettings",
    "SessionData",
    "SessionFolder",
    "check",
    "check_save_target",
    "is_session",
]
