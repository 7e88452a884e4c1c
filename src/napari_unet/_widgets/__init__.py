"""napari dock widgets: Segment (:mod:`._segment`), and Correct-and-fine-tune (:mod:`._finetune`).

The widgets are thin: compute goes through the core API in thread workers
(:mod:`._jobs`), state lives in Qt-free classes (:mod:`._state`, :mod:`._session`).
Nothing is imported here, so those Qt-free modules import without Qt.
"""
