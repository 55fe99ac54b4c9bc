"""The review view's keys, in one table (the actions, the `?` overlay and the docs read it), and the dialog that
changes them (saved in the user's settings; a key on two actions is refused)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QKeySequence, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

# (action name, key sequences, description, group)
SHORTCUTS: list[tuple[str, list[str], str, str]] = [
    ("teacher_better", ["T"], "teacher better", "Verdicts"),
    ("student_better", ["S"], "student better", "Verdicts"),
    ("both_good", ["G"], "both good", "Verdicts"),
    ("both_bad", ["B"], "both bad", "Verdicts"),
    ("accept_vlm", ["A"], "accept the VLM verdict as yours", "Verdicts"),
    ("reject_vlm", ["X"], "reject the VLM verdict (stays pending)", "Verdicts"),
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
    ("tool_box", ["R"], "box tool: drag a box (teacher)", "Correct"),
    ("refine_mask", ["C"], "refine the mask on screen (teacher)", "Correct"),
    ("refine_gt", ["Shift+C"], "refine the ground truth (teacher)", "Correct"),
    ("brush_smaller", ["["], "smaller brush", "Correct"),
    ("brush_bigger", ["]"], "bigger brush", "Correct"),
    ("switch_model", ["M"], "teacher / student model for points", "Correct"),
    ("auto_masks", ["U"], "automatic masks: first / next candidate", "Correct"),
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


PREFS_KEY = "review/shortcuts"  # {action: [key, ...]}: only the actions a user changed


def effective(overrides: dict[str, list[str]] | None = None) -> list[tuple[str, list[str], str, str]]:
    """SHORTCUTS with a user's keys in place of the defaults."""
    ov = overrides or {}
    return [(name, list(ov.get(name, keys)), desc, group) for name, keys, desc, group in SHORTCUTS]


def normalise(key: str) -> str:
    """One spelling per key ("ctrl+z" and "Ctrl+Z" are the same); empty when Qt does not know the key."""
    return QKeySequence(key.strip()).toString(QKeySequence.SequenceFormat.PortableText)


def problems(mapping: dict[str, list[str]]) -> list[str]:
    """What stops a set of keys from being used: unknown actions, keys Qt cannot read, one key on two actions."""
    names = {n for n, *_ in SHORTCUTS}
    out = [f"unknown action {n!r}" for n in mapping if n not in names]
    owner: dict[str, str] = {}
    for name, keys, _d, _g in effective(mapping):
        for k in keys:
            norm = normalise(k)
            if not norm:
                out.append(f"{name}: {k!r} is not a key")
            elif norm in owner and owner[norm] != name:
                out.append(f"{norm} is on both {owner[norm]} and {name}")
            else:
                owner[norm] = name
    return out


def parse_keys(text: str) -> list[str]:
    """'T; Shift+T' -> ['T', 'Shift+T'] (a semicolon separates keys; a key may contain '+')."""
    return [normalise(k) or k.strip() for k in text.split(";") if k.strip()]


class ShortcutsDialog(QDialog):
    """Every review action with its keys, editable ("T; Shift+T"); OK refuses keys Qt cannot read and conflicts, and
    says which. `overrides()` is what differs from the defaults (what gets saved)."""

    def __init__(self, current: dict[str, list[str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.table = QTableWidget(len(SHORTCUTS), 3)
        self.table.setHorizontalHeaderLabels(["Action", "Group", "Keys (separate with ;)"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        for row, (name, keys, desc, group) in enumerate(effective(current)):
            for col, text in enumerate((desc, group)):
                item = QTableWidgetItem(text)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                item.setData(Qt.ItemDataRole.UserRole, name)
                self.table.setItem(row, col, item)
            self.table.setItem(row, 2, QTableWidgetItem("; ".join(keys)))
        self.error = QLabel("")
        self.error.setStyleSheet("color: #D55E00")
        self.error.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
                                   | QDialogButtonBox.StandardButton.RestoreDefaults)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(self.restore_defaults)
        lay = QVBoxLayout(self)
        lay.addWidget(self.table)
        lay.addWidget(self.error)
        lay.addWidget(buttons)
        self.resize(620, 640)

    def set_keys(self, action: str, text: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == action:
                self.table.item(row, 2).setText(text)
                return
        raise KeyError(action)

    def restore_defaults(self) -> None:
        for name, keys, _d, _g in SHORTCUTS:
            self.set_keys(name, "; ".join(keys))

    def mapping(self) -> dict[str, list[str]]:
        return {self.table.item(r, 0).data(Qt.ItemDataRole.UserRole): parse_keys(self.table.item(r, 2).text())
                for r in range(self.table.rowCount())}

    def overrides(self) -> dict[str, list[str]]:
        defaults = {n: [normalise(k) for k in keys] for n, keys, _d, _g in SHORTCUTS}
        return {n: keys for n, keys in self.mapping().items() if keys != defaults[n]}

    def accept(self) -> None:
        found = problems(self.mapping())
        if found:
            self.error.setText("Not saved: " + "; ".join(found[:6]))
            return
        super().accept()


class ShortcutOverlay(QWidget):
    """Translucent sheet listing every key; any key or click closes it."""

    closed = Signal()

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.entries = effective()  # the keys in use (ReviewWidget.apply_shortcuts updates them)
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
            items = [s for s in self.entries if s[3] == group]
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
