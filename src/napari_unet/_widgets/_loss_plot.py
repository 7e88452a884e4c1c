"""A tiny loss curve (a sparkline drawn with QPainter): no plotting library needed."""

from __future__ import annotations

from typing import Optional

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Draws the recent training losses as a line, scaled to the widget."""

    def __init__(self, parent: Optional[QWidget] = None, max_points: int = 500) -> None:
        super().__init__(parent)
        self.values: list[float] = []
        self.max_points = max_points
        self.setFixedHeight(40)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss per step (lower is better)")

    def clear(self) -> None:
        self.values = []
        self.update()

    def add(self, value: float) -> None:
        self.values.append(float(value))
        if len(self.values) > self.max_points:
            self.values = self.values[-self.max_points:]
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.rect().adjusted(2, 2, -2, -2)
        painter.setPen(QPen(QColor(128, 128, 128, 120), 1))
        painter.drawRect(rect)
        values = self.values
        if len(values) < 2:
            painter.end()
            return
        lo, hi = min(values), max(values)
        span = hi - lo or 1.0
        n = len(values) - 1
        points = QPolygonF([
            QPointF(rect.left() + rect.width() * i / n,
                    rect.bottom() - rect.height() * (v - lo) / span)
            for i, v in enumerate(values)
        ])
        painter.setPen(QPen(QColor(255, 170, 0), 1.5, Qt.PenStyle.SolidLine))
        painter.drawPolyline(points)
        painter.end()
