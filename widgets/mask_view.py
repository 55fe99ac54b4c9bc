"""The crop with its mask overlays, at pixel accuracy.

The crop and its visible mask layers are composited at image resolution with cv2 (about 2 ms for four layers on
512x512) into one opaque pixmap, so a repaint is a single blit whatever the zoom and the number of layers (four
translucent scaled pixmaps cost 6-8 ms a repaint). No smoothing anywhere: the view never sets
SmoothPixmapTransform and the pixmap item uses Qt.FastTransformation, so at 16x zoom every image pixel is a crisp
square and contours sit on pixel edges.

Modes: "fill" (translucent fill), "contour" (1-pixel inner boundary) and "diff" (teacher-only pixels in the
teacher colour, student-only in the student colour, agreement faint grey; GT and corrected as contours).
Mouse: left/right click emit positive/negative points (point tool) or paint/erase (brush tools); with the box tool
(the teacher's box prompt) a left drag draws a box and clicks still add points; wheel zooms around the cursor;
middle button, or Space + left button, pans.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPen,
    QPixmap,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from widgets.palette import OKABE_ITO_LAYERS

LAYERS = ("teacher", "student", "gt", "corrected")
MODES = ("fill", "contour", "diff")
_KERNEL = np.ones((3, 3), np.uint8)
POS_COLOUR = QColor("#F0E442")  # Okabe-Ito yellow
NEG_COLOUR = QColor("#D55E00")  # Okabe-Ito vermillion


def contour(mask: np.ndarray) -> np.ndarray:
    """1-pixel inner boundary of a bool mask, as uint8 0/1."""
    m = mask.view(np.uint8) if mask.dtype == bool else (mask > 0).astype(np.uint8)
    return m & ~cv2.erode(m, _KERNEL, borderType=cv2.BORDER_CONSTANT, borderValue=0) & 1


def rgb_pixmap(image: np.ndarray) -> QPixmap:
    buf = np.ascontiguousarray(image)
    if buf.ndim == 2:
        h, w = buf.shape
        return QPixmap.fromImage(QImage(buf.data, w, h, w, QImage.Format.Format_Grayscale8))
    h, w = buf.shape[:2]
    return QPixmap.fromImage(QImage(buf.data, w, h, 3 * w, QImage.Format.Format_RGB888))


class PointMarker(QGraphicsItem):
    """A prompt point that keeps its screen size at any zoom."""

    R = 6.0

    def __init__(self, x: float, y: float, positive: bool) -> None:
        super().__init__()
        self.positive = positive
        self.setPos(QPointF(x + 0.5, y + 0.5))
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        self.setZValue(20)

    def boundingRect(self) -> QRectF:
        r = self.R + 2
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, p: QPainter, _o: QStyleOptionGraphicsItem, _w: QWidget | None = None) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setPen(QPen(QColor("black"), 1.5))
        p.setBrush(QBrush(POS_COLOUR if self.positive else NEG_COLOUR))
        p.drawEllipse(QPointF(0, 0), self.R, self.R)
        p.setPen(QPen(QColor("black"), 2))
        p.drawLine(QPointF(-3.5, 0), QPointF(3.5, 0))
        if self.positive:
            p.drawLine(QPointF(0, -3.5), QPointF(0, 3.5))


class MaskView(QGraphicsView):
    pointClicked = Signal(float, float, int)  # x, y in image pixels; 1 positive, 0 negative
    brushStroke = Signal(float, float, float, float, bool)  # x0, y0, x1, y1, paint (False: erase)
    brushFinished = Signal()
    boxDrawn = Signal(float, float, float, float)  # x0, y0, x1, y1 in image pixels (box tool, left drag)
    zoomChanged = Signal(float)
    hovered = Signal(int, int)  # image pixel under the cursor

    def __init__(self, colours: dict[str, str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint(0))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontAdjustForAntialiasing, True)
        self.setBackgroundBrush(QBrush(QColor(32, 32, 36)))
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(240, 240)

        self.colours = {k: QColor(v) for k, v in (colours or {}).items()}
        for k, v in OKABE_ITO_LAYERS.items():
            self.colours.setdefault(k, QColor(v))
        self.mode = "fill"
        self.opacity = 0.45
        self.visible = {k: True for k in LAYERS}
        self.masks: dict[str, np.ndarray | None] = {k: None for k in LAYERS}
        self.tool = "points"
        self.brush_radius = 6
        self._panning = False
        self._space = False
        self._last_pan = QPointF()
        self._brush_last: QPointF | None = None
        self._brush_paint = True
        self._box_start: QPointF | None = None
        self._fitted = True

        sc = self.scene()
        self.image_item = QGraphicsPixmapItem()
        self.image_item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.image_item.setZValue(0)
        sc.addItem(self.image_item)
        self.point_items: list[PointMarker] = []
        self.cursor_item = QGraphicsEllipseItem()
        self.cursor_item.setPen(QPen(QColor("white"), 0))
        self.cursor_item.setZValue(30)
        self.cursor_item.setVisible(False)
        sc.addItem(self.cursor_item)
        # the box prompt (solid) and the box being dragged (dashed); cosmetic pens: 2 screen pixels at any zoom
        self.box_item = QGraphicsRectItem()
        self.rubber_item = QGraphicsRectItem()
        for item, style in ((self.box_item, Qt.PenStyle.SolidLine), (self.rubber_item, Qt.PenStyle.DashLine)):
            pen = QPen(POS_COLOUR, 2, style)
            pen.setCosmetic(True)
            item.setPen(pen)
            item.setZValue(25)
            item.setVisible(False)
            sc.addItem(item)
        self.image_hw: tuple[int, int] = (0, 0)
        self.image: np.ndarray | None = None
        self.composited: np.ndarray | None = None  # what is on screen, at image resolution (tests, screenshots)
        self.last_render_ms = 0.0

    # content ------------------------------------------------------------------------------------------------
    def set_sample(self, image: np.ndarray, masks: dict[str, np.ndarray | None], keep_view: bool = False) -> None:
        """Show a new crop with its masks (one composite, one repaint)."""
        h, w = image.shape[:2]
        new_size = (h, w) != self.image_hw
        self.image_hw = (h, w)
        self.image = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        self.scene().setSceneRect(QRectF(0, 0, w, h))
        self.masks = {k: masks.get(k) for k in LAYERS}
        self.set_points([], [])
        self._render()
        if new_size or not keep_view or self._fitted:
            self.fit()

    def clear(self) -> None:
        self.image = None
        self.composited = None
        self.image_item.setPixmap(QPixmap())
        self.masks = {k: None for k in LAYERS}
        self.set_points([], [])
        self.set_box(None)
        self.image_hw = (0, 0)

    def set_mask(self, name: str, mask: np.ndarray | None) -> None:
        """Replace one layer (the live correction while clicking)."""
        self.masks[name] = mask
        self._render()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.mode = mode
        self._render()

    def cycle_mode(self) -> str:
        self.set_mode(MODES[(MODES.index(self.mode) + 1) % len(MODES)])
        return self.mode

    def set_opacity(self, opacity: float) -> None:
        self.opacity = float(np.clip(opacity, 0.05, 1.0))
        self._render()

    def set_layer_visible(self, name: str, on: bool) -> None:
        self.visible[name] = on
        self._render()

    def toggle_layer(self, name: str) -> bool:
        self.set_layer_visible(name, not self.visible[name])
        return self.visible[name]

    def set_colours(self, colours: dict[str, str]) -> None:
        for k, v in colours.items():
            self.colours[k] = QColor(v)
        self._render()

    def layer_shown(self, name: str) -> bool:
        """The layer is drawn now (has a mask, is switched on, and the mode draws it)."""
        if self.masks.get(name) is None or not self.visible[name]:
            return False
        return not (self.mode == "diff" and name in ("teacher", "student"))

    def diff_shown(self) -> bool:
        return self.mode == "diff" and any(self.masks.get(n) is not None and self.visible[n]
                                           for n in ("teacher", "student"))

    def _rgb(self, name: str) -> np.ndarray:
        c = self.colours[name]
        return np.array([c.red(), c.green(), c.blue()], np.uint8)

    def _render(self) -> None:
        """Composite the crop and the visible layers at image resolution (cv2, a few ms for 512x512) into one
        opaque pixmap: one nearest-neighbour blit per repaint whatever the zoom and the number of layers."""
        if self.image is None:
            return
        t0 = time.perf_counter()
        out = self.image.copy()
        a = self.opacity

        def blend(mask: np.ndarray, colour: np.ndarray, alpha: float) -> None:
            if alpha >= 0.999:
                out[mask] = colour
                return
            ov = out.copy()
            ov[mask] = colour
            cv2.addWeighted(ov, alpha, out, 1.0 - alpha, 0.0, dst=out)

        if self.mode == "diff":
            t, st = self.masks.get("teacher"), self.masks.get("student")
            if self.diff_shown():
                shape = out.shape[:2]
                tt = t if (t is not None and self.visible["teacher"]) else np.zeros(shape, bool)
                ss = st if (st is not None and self.visible["student"]) else np.zeros(shape, bool)
                blend(tt & ss, np.array([255, 255, 255], np.uint8), 0.3)
                alpha = max(a, 0.75)
                blend(tt & ~ss, self._rgb("teacher"), alpha)
                blend(ss & ~tt, self._rgb("student"), alpha)
            for name in ("gt", "corrected"):
                if self.layer_shown(name):
                    out[contour(self.masks[name]).view(bool)] = self._rgb(name)  # type: ignore[arg-type]
        else:
            for name in LAYERS:
                if not self.layer_shown(name):
                    continue
                m = self.masks[name]
                if self.mode == "contour":
                    out[contour(m).view(bool)] = self._rgb(name)  # type: ignore[arg-type]
                else:
                    blend(m, self._rgb(name), a)  # type: ignore[arg-type]
        self.composited = out
        self.image_item.setPixmap(rgb_pixmap(out))
        self.last_render_ms = (time.perf_counter() - t0) * 1000

    # points -------------------------------------------------------------------------------------------------
    def set_points(self, points: list[tuple[float, float]], labels: list[int]) -> None:
        for it in self.point_items:
            self.scene().removeItem(it)
        self.point_items = []
        for (x, y), lab in zip(points, labels):
            it = PointMarker(x, y, bool(lab))
            self.scene().addItem(it)
            self.point_items.append(it)

    def set_box(self, box: tuple[float, float, float, float] | None) -> None:
        """Show the box prompt (corners in image pixels, pixel edges), or hide it."""
        if box is None:
            self.box_item.setVisible(False)
            return
        x0, y0, x1, y1 = box
        self.box_item.setRect(QRectF(QPointF(x0, y0), QPointF(x1, y1)).normalized())
        self.box_item.setVisible(True)

    # tools --------------------------------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in ("points", "brush", "eraser", "box"):
            raise ValueError(tool)
        self.tool = tool
        self.cursor_item.setVisible(tool in ("brush", "eraser"))
        self.viewport().setCursor(Qt.CursorShape.CrossCursor)

    def set_brush_radius(self, r: int) -> None:
        self.brush_radius = int(np.clip(r, 1, 200))
        self._place_cursor(self.cursor_item.rect().center())

    def _place_cursor(self, c: QPointF) -> None:
        r = self.brush_radius
        self.cursor_item.setRect(QRectF(c.x() - r, c.y() - r, 2 * r, 2 * r))

    # view ---------------------------------------------------------------------------------------------------
    def fit(self) -> None:
        h, w = self.image_hw
        if h and w:
            self.resetTransform()
            self.fitInView(QRectF(0, 0, w, h), Qt.AspectRatioMode.KeepAspectRatio)
            self._fitted = True
            self.zoomChanged.emit(self.zoom())

    def zoom(self) -> float:
        return float(self.transform().m11())

    def zoom_by(self, factor: float) -> None:
        z = self.zoom()
        factor = float(np.clip(z * factor, 0.05, 64.0)) / z
        self.scale(factor, factor)
        self._fitted = False
        self.zoomChanged.emit(self.zoom())

    def resizeEvent(self, e) -> None:  # noqa: ANN001 - Qt signature
        super().resizeEvent(e)
        if self._fitted:
            self.fit()

    def wheelEvent(self, e: QWheelEvent) -> None:
        dy = e.angleDelta().y()
        if dy:
            self.zoom_by(1.25 ** (dy / 120.0))
        e.accept()

    def image_pos(self, view_pos: QPointF) -> QPointF:
        return self.mapToScene(view_pos.toPoint())

    def _in_image(self, p: QPointF) -> bool:
        h, w = self.image_hw
        return 0 <= p.x() < w and 0 <= p.y() < h

    def mousePressEvent(self, e: QMouseEvent) -> None:
        btn = e.button()
        if btn == Qt.MouseButton.MiddleButton or (btn == Qt.MouseButton.LeftButton and self._space):
            self._panning = True
            self._last_pan = e.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            e.accept()
            return
        p = self.image_pos(e.position())
        if btn in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton) and self._in_image(p):
            if self.tool == "box" and btn == Qt.MouseButton.LeftButton:
                self._box_start = p
                self.rubber_item.setRect(QRectF(p, p))
                self.rubber_item.setVisible(True)
            elif self.tool in ("points", "box"):
                self.pointClicked.emit(float(int(p.x())), float(int(p.y())),
                                       1 if btn == Qt.MouseButton.LeftButton else 0)
            else:
                self._brush_paint = self.tool == "brush" and btn == Qt.MouseButton.LeftButton
                self._brush_last = p
                self.brushStroke.emit(p.x(), p.y(), p.x(), p.y(), self._brush_paint)
            e.accept()
            return
        super().mousePressEvent(e)

    def mouseMoveEvent(self, e: QMouseEvent) -> None:
        if self._panning:
            d = e.position() - self._last_pan
            self._last_pan = e.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(d.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(d.y()))
            self._fitted = False
            e.accept()
            return
        p = self.image_pos(e.position())
        if self.tool in ("brush", "eraser"):
            self._place_cursor(p)
        if self._box_start is not None:
            self.rubber_item.setRect(QRectF(self._box_start, self._clamped(p)).normalized())
            e.accept()
            return
        if self._in_image(p):
            self.hovered.emit(int(p.x()), int(p.y()))
        if self._brush_last is not None:
            self.brushStroke.emit(self._brush_last.x(), self._brush_last.y(), p.x(), p.y(), self._brush_paint)
            self._brush_last = p
            e.accept()
            return
        super().mouseMoveEvent(e)

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:
        if self._panning:
            self._panning = False
            self.viewport().setCursor(Qt.CursorShape.CrossCursor)
            e.accept()
            return
        if self._brush_last is not None:
            self._brush_last = None
            self.brushFinished.emit()
            e.accept()
            return
        if self._box_start is not None:
            a, b = self._box_start, self._clamped(self.image_pos(e.position()))
            self._box_start = None
            self.rubber_item.setVisible(False)
            if abs(b.x() - a.x()) < 2 and abs(b.y() - a.y()) < 2:  # a click, not a drag: a positive point
                self.pointClicked.emit(float(int(a.x())), float(int(a.y())), 1)
            else:  # corners on pixel edges: the box covers every pixel the drag passed over
                self.boxDrawn.emit(float(int(min(a.x(), b.x()))), float(int(min(a.y(), b.y()))),
                                   float(int(max(a.x(), b.x())) + 1), float(int(max(a.y(), b.y())) + 1))
            e.accept()
            return
        super().mouseReleaseEvent(e)

    def _clamped(self, p: QPointF) -> QPointF:
        h, w = self.image_hw
        return QPointF(min(max(p.x(), 0.0), w - 0.001), min(max(p.y(), 0.0), h - 0.001))

    def contextMenuEvent(self, e) -> None:  # noqa: ANN001 - right click is a negative point, not a menu
        e.accept()

    def keyPressEvent(self, e: QKeyEvent) -> None:
        if e.key() == Qt.Key.Key_Space and not e.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            e.accept()
            return
        super().keyPressEvent(e)

    def keyReleaseEvent(self, e: QKeyEvent) -> None:
        if e.key() == Qt.Key.Key_Space and not e.isAutoRepeat():
            self._space = False
            self.viewport().setCursor(Qt.CursorShape.CrossCursor)
            e.accept()
            return
        super().keyReleaseEvent(e)

    def render_to_image(self) -> QImage:
        """The viewport as shown (screenshots, tests)."""
        return self.viewport().grab().toImage()

