"""The review view's keys, in one table (the actions, the `?` overlay and the docs read it)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QWidget

# (action name, key sequences, description, group)
SHORTCUTS: list[tuple[str, list[str], str, str]] = [
    ("teacher_better", ["T"], "teacher better", "Verdicts"),
    ("student_better", ["S"], "student better", "Verdicts"),
    ("both_good", ["G"], "both good", "Verdicts"),
    ("both_bad", ["B"], "both bad", "Verdicts"),
    ("undo", ["Ctrl+Z"], "undo last verdict", "Verdicts"),
    ("next", ["J", "Down", "Right"], "next crop", "Navigate"),
    ("prev", ["K", "Up", "Left"], "previous crop", "Navigate"),
    ("reload", ["Ctrl+R"], "reload the queue", "Navigate"),
    ("layer_teacher", ["1"], "teacher mask on/off", "View"),
    ("layer_student", ["2"], "student mask on/off", "View"),
    ("layer_gt", ["3"], "ground truth on/off", "View"),
    ("layer_corrected", ["4"], "corrected mask on/off", "View"),
    ("cycle_mode", ["V"], "fill / contour / difference", "View"),
    ("fit", ["F"], "fit crop to view", "View"),
    ("zoom_in", ["+", "="], "zoom in (or mouse wheel)", "View"),
    ("zoom_out", ["-"], "zoom out", "View"),
    ("tool_points", ["P"], "point tool: left click +, right click −", "Correct"),
    ("tool_brush", ["D"], "brush (right button erases)", "Correct"),
    ("tool_eraser", ["E"], "eraser", "Correct"),
    ("brush_smaller", ["["], "smaller brush", "Correct"),
    ("brush_bigger", ["]"], "bigger brush", "Correct"),
    ("switch_model", ["M"], "teacher / student model for points", "Correct"),
    ("remove_point", ["Backspace"], "take back last point or stroke", "Correct"),
    ("clear_points", ["Esc"], "clear the correction", "Correct"),
    ("save_correction", ["Return", "Enter"], "save as corrected ground truth", "Correct"),
    ("help", ["?", "F1"], "show / hide this overlay", "Help"),
]

GROUPS = ("Verdicts", "Navigate", "View", "Correct", "Help")


def keys_for(action: str) -> list[str]:
    for name, keys, _d, _g in SHORTCUTS:
        if name == action:
            return keys
    raise KeyError(action)


class ShortcutOverlay(QWidget):
    """Translucent sheet listing every key; any key or click closes it."""

    closed = Signal()

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground, True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.hide()

    def toggle(self) -> None:
        if self.isVisible():
            self.close_overlay()
        else:
            parent = self.parentWidget()
            if parent is not None:
                self.setGeometry(parent.rect())
            self.show()
            self.raise_()
            self.setFocus()

    def close_overlay(self) -> None:
        self.hide()
        self.closed.emit()

    def keyPressEvent(self, e: QKeyEvent) -> None:
        self.close_overlay()
        e.accept()

    def mousePressEvent(self, e: QMouseEvent) -> None:
        self.close_overlay()
        e.accept()

    def paintEvent(self, _e: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(12, 12, 16, 240))
        title = QFont(self.font())
        title.setPointSizeF(title.pointSizeF() * 1.5)
        title.setBold(True)
        body = QFont(self.font())
        body.setPointSizeF(body.pointSizeF() * 1.1)
        keyfont = QFont(body)
        keyfont.setBold(True)
        p.setPen(QColor("white"))
        p.setFont(title)
        p.drawText(QRectF(0, 16, self.width(), 40), Qt.AlignmentFlag.AlignHCenter, "Keyboard shortcuts")
        cols = 3 if self.width() > 1100 else 2
        placement = ({"Verdicts": 0, "Navigate": 0, "Help": 0, "View": 1, "Correct": 2} if cols == 3
                     else {"Verdicts": 0, "Navigate": 0, "View": 0, "Correct": 1, "Help": 1})
        col_w = (self.width() - 80) / cols
        line_h = body.pointSizeF() * 2.1
        x0, y0 = 40.0, 80.0
        ys = [y0] * cols
        for group in GROUPS:
            col = placement[group]
            x, y = x0 + col * col_w, ys[col]
            items = [s for s in SHORTCUTS if s[3] == group]
            p.setFont(keyfont)
            p.setPen(QColor("#56B4E9"))
            p.drawText(QRectF(x, y, col_w, line_h), Qt.AlignmentFlag.AlignLeft, group)
            y += line_h
            for _name, keys, desc, _g in items:
                p.setFont(keyfont)
                p.setPen(QColor("#F0E442"))
                p.drawText(QRectF(x, y, col_w * 0.36, line_h), Qt.AlignmentFlag.AlignLeft, " / ".join(keys))
                p.setFont(body)
                p.setPen(QColor("white"))
                p.drawText(QRectF(x + col_w * 0.36, y, col_w * 0.62, line_h), Qt.AlignmentFlag.AlignLeft, desc)
                y += line_h
            ys[col] = y + line_h * 0.8
        p.end()
