"""The review queue: a filter bar over a table of crops (flagged first, most disagreement first; a click on the
"hardness" header sorts by the expected gain of a verdict, review.queue_order)."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from review.queue_data import VERDICT_LABEL, VERDICTS, QueueColumns, QueueFilter
from widgets.queue_model import (
    COL_CLASS,
    COL_CONF,
    COL_HARD,
    COL_HUMAN,
    COL_ID,
    COL_IOU,
    COL_THUMB,
    COL_VLM,
    THUMB,
    QueueModel,
)

STATUS_CHOICES = [
    ("all statuses", None),
    ("to review", frozenset({"pending", "judged"})),
    ("pending", frozenset({"pending"})),
    ("judged (VLM)", frozenset({"judged"})),
    ("reviewed", frozenset({"reviewed"})),
]


class QueueWidget(QWidget):
    currentSampleChanged = Signal(object)  # sample id or None

    def __init__(self, parent: QWidget | None = None, thumbnails: bool = True) -> None:
        super().__init__(parent)
        self.model = QueueModel(self, thumbnails=thumbnails)
        self._building = False

        self.status_box = QComboBox()
        for label, val in STATUS_CHOICES:
            self.status_box.addItem(label, val)
        self.class_box = QComboBox()
        self.class_box.addItem("all classes", None)
        self.iou_min = QDoubleSpinBox()
        self.iou_max = QDoubleSpinBox()
        for sb, v in ((self.iou_min, 0.0), (self.iou_max, 1.0)):
            sb.setRange(0.0, 1.0)
            sb.setSingleStep(0.05)
            sb.setDecimals(2)
            sb.setValue(v)
            sb.setKeyboardTracking(False)
        self.vlm_box = QComboBox()
        self.vlm_box.addItem("any VLM verdict", None)
        for v in VERDICTS:
            if v != "corrected":
                self.vlm_box.addItem(f"VLM: {VERDICT_LABEL[v]}", frozenset({v}))
        self.vlm_box.addItem("not judged", frozenset({"none"}))
        self.disagree_box = QCheckBox("VLM ≠ human")
        self.disagree_box.setToolTip("Only crops where the VLM verdict and the human verdict differ")
        self.flagged_box = QCheckBox("flagged")
        self.flagged_box.setToolTip("Only crops flagged by the teacher/student disagreement threshold")
        self.count_label = QLabel("0 / 0")

        for w in (self.status_box, self.class_box, self.vlm_box):
            w.currentIndexChanged.connect(self._apply_filter)
            w.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        for w in (self.iou_min, self.iou_max):
            w.valueChanged.connect(self._apply_filter)
        for w in (self.disagree_box, self.flagged_box):
            w.toggled.connect(self._apply_filter)
            w.setFocusPolicy(Qt.FocusPolicy.ClickFocus)

        row1 = QHBoxLayout()
        row1.addWidget(self.status_box)
        row1.addWidget(self.class_box)
        row1.addWidget(self.vlm_box)
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("IoU"))
        row2.addWidget(self.iou_min)
        row2.addWidget(QLabel("–"))
        row2.addWidget(self.iou_max)
        row2.addWidget(self.flagged_box)
        row2.addWidget(self.disagree_box)
        row2.addStretch(1)
        row2.addWidget(self.count_label)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(False)
        self.table.setWordWrap(False)
        self.table.setIconSize(self.table.iconSize().scaled(THUMB, THUMB, Qt.AspectRatioMode.IgnoreAspectRatio))
        vh = self.table.verticalHeader()
        vh.setVisible(False)
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(THUMB + 4)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        for col, w in ((COL_THUMB, THUMB + 8), (COL_ID, 44), (COL_CLASS, 72), (COL_IOU, 62), (COL_HARD, 62),
                       (COL_VLM, 100), (COL_CONF, 52), (COL_HUMAN, 96)):
            self.table.setColumnWidth(col, w)
        hh.setSortIndicatorShown(True)
        hh.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        hh.sortIndicatorChanged.connect(self._sort_changed)
        # Letter keys belong to the verdict shortcuts, not to the table's type-ahead search.
        self.table.keyboardSearch = lambda _s: None  # type: ignore[method-assign]
        self.table.selectionModel().currentRowChanged.connect(self._current_changed)
        self.model.filtered.connect(lambda shown, total: self.count_label.setText(f"{shown:,} / {total:,}"))

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addWidget(self.table, 1)

    # data ---------------------------------------------------------------------------------------------------
    def set_columns(self, q: QueueColumns, keep_sample: int | None = None) -> None:
        self._building = True
        try:
            cur = self.class_box.currentData()
            self.class_box.blockSignals(True)
            self.class_box.clear()
            self.class_box.addItem("all classes", None)
            for c in q.classes:
                self.class_box.addItem(c, frozenset({c}))
            idx = self.class_box.findData(cur) if cur is not None else 0
            self.class_box.setCurrentIndex(max(0, idx))
            self.class_box.blockSignals(False)
            self.model.filter = self.current_filter()
            self.model.set_columns(q)
        finally:
            self._building = False
        row = self.model.row_of_sample(keep_sample) if keep_sample is not None else -1
        self.select_row(row if row >= 0 else 0)

    def current_filter(self) -> QueueFilter:
        return QueueFilter(
            statuses=self.status_box.currentData(),
            classes=self.class_box.currentData(),
            iou_min=self.iou_min.value(),
            iou_max=self.iou_max.value(),
            vlm=self.vlm_box.currentData(),
            disagreement_only=self.disagree_box.isChecked(),
            flagged_only=self.flagged_box.isChecked(),
        )

    def _apply_filter(self, *_a: object) -> None:
        if self._building:
            return
        keep = self.current_sample()
        self.model.set_filter(self.current_filter())
        row = self.model.row_of_sample(keep) if keep is not None else -1
        self.select_row(row if row >= 0 else 0)

    def _sort_changed(self, section: int, order: Qt.SortOrder) -> None:
        keep = self.current_sample()
        self.model.sort(section, order)
        if keep is not None:
            row = self.model.row_of_sample(keep)
            if row >= 0:
                self.select_row(row)

    # navigation ---------------------------------------------------------------------------------------------
    def current_row(self) -> int:
        idx = self.table.selectionModel().currentIndex()
        return idx.row() if idx.isValid() else -1

    def current_sample(self) -> int | None:
        return self.model.sample_id_at(self.current_row())

    def select_row(self, row: int) -> bool:
        n = self.model.rowCount()
        if n == 0:
            self.currentSampleChanged.emit(None)
            return False
        row = max(0, min(row, n - 1))
        idx = self.model.index(row, COL_ID)
        sm = self.table.selectionModel()
        if sm.currentIndex().row() == row:
            return False
        sm.setCurrentIndex(idx, QItemSelectionModel.SelectionFlag.ClearAndSelect
                           | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(idx, QAbstractItemView.ScrollHint.EnsureVisible)
        return True

    def select_sample(self, sample_id: int) -> bool:
        row = self.model.row_of_sample(sample_id)
        if row < 0:
            return False
        self.select_row(row)
        return True

    def step(self, delta: int) -> bool:
        """Move the selection; returns False at either end of the queue."""
        row = self.current_row()
        target = row + delta
        if target < 0 or target >= self.model.rowCount():
            return False
        return self.select_row(target)

    def upcoming(self, count: int) -> list[int]:
        """Sample ids of the next `count` rows after the current one (for prefetching)."""
        row = self.current_row()
        ids = []
        for r in range(row + 1, min(row + 1 + count, self.model.rowCount())):
            sid = self.model.sample_id_at(r)
            if sid is not None:
                ids.append(sid)
        return ids

    def _current_changed(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        self.currentSampleChanged.emit(self.model.sample_id_at(cur.row()) if cur.isValid() else None)

    def close_workers(self) -> None:
        self.model.close()
