"""A combo box listing the viewer's layers of one kind, kept in sync with the layer list."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any, Optional

from qtpy.QtWidgets import QComboBox, QWidget


class LayerCombo(QComboBox):
    """Layers accepted by ``accept``; holds references to the layer objects themselves."""

    def __init__(self, viewer: Any, accept: Callable[[Any], bool],
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.accept = accept
        self._layers: list[Any] = []
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved, events.changed):
            emitter.connect(self.refresh)
        self.refresh()

    def refresh(self, event=None) -> None:
        current = self.current()
        self._layers = [layer for layer in self.viewer.layers if self.accept(layer)]
        for layer in self._layers:
            with suppress(TypeError, ValueError, RuntimeError):  # not connected yet
                layer.events.name.disconnect(self.refresh)
            layer.events.name.connect(self.refresh)
        self.blockSignals(True)
        self.clear()
        for layer in self._layers:
            self.addItem(layer.name)
        if current in self._layers:
            self.setCurrentIndex(self._layers.index(current))
        self.blockSignals(False)
        if current not in self._layers:
            self.currentIndexChanged.emit(self.currentIndex())

    def current(self) -> Optional[Any]:
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def select(self, layer: Any) -> None:
        if layer in self._layers:
            self.setCurrentIndex(self._layers.index(layer))
