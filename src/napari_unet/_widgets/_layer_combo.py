"""A combo box listing the viewer's layers of one kind, kept in sync with the layer list."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any, Optional

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QWidget

from ._qt import NAME_LIMIT, elide_middle


class LayerCombo(QComboBox):
    """Layers accepted by ``accept``; holds references to the layer objects themselves.

    Long names are shown elided in the middle (the whole name is the item's tooltip), and
    the box does not widen the dock for them."""

    def __init__(self, viewer: Any, accept: Callable[[Any], bool],
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.accept = accept
        self._layers: list[Any] = []
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(min(NAME_LIMIT, 24))
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
        for i, layer in enumerate(self._layers):
            self.addItem(self._shown(layer.name))
            self.setItemData(i, layer.name, Qt.ItemDataRole.ToolTipRole)
        if current in self._layers:
            self.setCurrentIndex(self._layers.index(current))
        self.blockSignals(False)
        if current not in self._layers:
            self.currentIndexChanged.emit(self.currentIndex())

    def _shown(self, name: str) -> str:
        """``name`` elided in the middle to at most NAME_LIMIT characters and to the box's
        width (a dock narrower than the name must not cut its end off)."""
        room = max(self.width() - 2 * self.iconSize().width() - 16, 48)
        return self.fontMetrics().elidedText(elide_middle(name), Qt.TextElideMode.ElideMiddle,
                                             room)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        for i, layer in enumerate(self._layers):
            self.setItemText(i, self._shown(layer.name))

    def current(self) -> Optional[Any]:
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def select(self, layer: Any) -> None:
        if layer in self._layers:
            self.setCurrentIndex(self._layers.index(layer))
