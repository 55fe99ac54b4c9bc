"""Table model of the review queue over column arrays, with numpy filtering and sorting and lazy thumbnails.

`QueueModel.rowCount()` is the number of rows passing the filter; row r shows queue row `order[r]`. Filtering
or sorting rebuilds `order` with numpy (review.queue_data.QueueColumns.shown_rows, a few ms at 100k rows) inside
one model reset; nothing per row runs in Python except `data()` for the rows on screen.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QPixmap

from review.queue_data import SORT_COLUMNS, STATUSES, VERDICT_LABEL, VERDICTS, QueueColumns, QueueFilter
from widgets.workers import TaskPool

THUMB = 44

COLUMNS = ("", "id", "class", "IoU T/S", "hardness", "VLM verdict", "VLM conf", "human")
COL_THUMB, COL_ID, COL_CLASS, COL_IOU, COL_HARD, COL_VLM, COL_CONF, COL_HUMAN = range(len(COLUMNS))
_SORT_KEYS = dict(zip((COL_ID, COL_CLASS, COL_IOU, COL_HARD, COL_VLM, COL_CONF, COL_HUMAN), SORT_COLUMNS))
HARDNESS_TIP = ("Expected gain of a verdict (review/queue_order.py): (1 - IoU T/S) x (1 - teacher score) / "
                "(1 - teacher score x student score). Sort descending to review where a verdict changes training most.")

_STATUS_BRUSH = {
    0: None,
    1: QBrush(QColor(86, 180, 233, 40)),  # judged: sky blue tint
    2: QBrush(QColor(0, 158, 115, 45)),  # reviewed: green tint
}


def load_thumbnail(path: str, size: int = THUMB) -> QImage:
    """Small RGB thumbnail; JPEGs decode at reduced size directly (4x fewer pixels to touch)."""
    img = cv2.imread(path, cv2.IMREAD_REDUCED_COLOR_2)
    if img is None:
        img = np.full((size, size, 3), 60, np.uint8)
    h, w = img.shape[:2]
    s = size / max(h, w)
    img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    h, w = img.shape[:2]
    return QImage(img.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class ThumbnailCache(QObject):
    """LRU of thumbnails by sample id; misses are loaded newest-request-first in a worker thread."""

    ready = Signal(int)  # sample id

    def __init__(self, capacity: int = 3000, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.capacity = capacity
        self._cache: OrderedDict[int, QPixmap] = OrderedDict()
        self._requested: set[int] = set()
        self._pool = TaskPool("thumbs", workers=1)
        self._seq = itertools.count()

    def get(self, sample_id: int, path: str) -> QPixmap | None:
        pm = self._cache.get(sample_id)
        if pm is not None:
            self._cache.move_to_end(sample_id)
            return pm
        if sample_id not in self._requested:
            self._requested.add(sample_id)
            # newest first: rows scrolled past are dropped when too many pile up
            if self._pool.pending() > 400:
                self._pool.cancel_pending()
                self._requested = {sample_id}
            self._pool.submit(load_thumbnail, path, priority=-next(self._seq), key=f"t{sample_id}",
                              on_result=lambda img, sid=sample_id: self._done(sid, img), owner=self)
        return None

    def _done(self, sample_id: int, img: QImage) -> None:
        self._requested.discard(sample_id)
        self._cache[sample_id] = QPixmap.fromImage(img)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        self.ready.emit(sample_id)

    def close(self) -> None:
        self._pool.close()


class QueueModel(QAbstractTableModel):
    filtered = Signal(int, int)  # shown, total

    def __init__(self, parent: QObject | None = None, thumbnails: bool = True) -> None:
        super().__init__(parent)
        self.q = QueueColumns.empty()
        self.filter = QueueFilter()
        self.order = np.zeros(0, np.int64)
        self._pos = np.zeros(0, np.int64)  # queue row -> shown row, -1 hidden
        self._sort: tuple[int, Qt.SortOrder] | None = None
        self._status = np.zeros(0, np.int8)
        self.thumbs: ThumbnailCache | None = ThumbnailCache(parent=self) if thumbnails else None
        if self.thumbs is not None:
            self.thumbs.ready.connect(self._thumb_ready)

    # data in ----------------------------------------------------------------------------------------------
    def set_columns(self, q: QueueColumns) -> None:
        self.beginResetModel()
        self.q = q
        self._status = q.status_code()
        self._rebuild()
        self.endResetModel()
        self.filtered.emit(len(self.order), len(self.q))

    def set_filter(self, f: QueueFilter) -> None:
        self.beginResetModel()
        self.filter = f
        self._rebuild()
        self.endResetModel()
        self.filtered.emit(len(self.order), len(self.q))

    def _rebuild(self) -> None:
        q = self.q
        col, order = self._sort or (None, None)
        self.order = q.shown_rows(self.filter, _SORT_KEYS.get(col), order == Qt.SortOrder.DescendingOrder)
        self._pos = np.full(len(q), -1, np.int64)
        self._pos[self.order] = np.arange(len(self.order))

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        old_rows = [int(self.order[p.row()]) if 0 <= p.row() < len(self.order) else -1 for p in persistent]
        self._sort = None if column < 0 or column == COL_THUMB else (column, order)
        self._rebuild()
        for p, qrow in zip(persistent, old_rows):
            new = int(self._pos[qrow]) if qrow >= 0 else -1
            self.changePersistentIndex(p, self.index(new, p.column()) if new >= 0 else QModelIndex())
        self.layoutChanged.emit()

    # lookups ----------------------------------------------------------------------------------------------
    def sample_id_at(self, row: int) -> int | None:
        if 0 <= row < len(self.order):
            return int(self.q.sample_id[self.order[row]])
        return None

    def row_of_sample(self, sample_id: int) -> int:
        qrow = self.q.row_of.get(int(sample_id))
        if qrow is None:
            return -1
        return int(self._pos[qrow])

    def shown_sample_ids(self) -> np.ndarray:
        return self.q.sample_id[self.order]

    def set_human(self, sample_id: int, verdict: str | None) -> None:
        """Reflect a verdict just written (the row stays where it is until the next filter)."""
        qrow = self.q.row_of.get(int(sample_id))
        if qrow is None:
            return
        self.q.human[qrow] = VERDICTS.index(verdict) if verdict in VERDICTS else -1
        self._status[qrow] = 2 if self.q.human[qrow] >= 0 else (1 if self.q.vlm[qrow] >= 0 else 0)
        row = int(self._pos[qrow])
        if row >= 0:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def set_vlm(self, sample_id: int, verdict: str | None, confidence: float | None = None) -> None:
        """Reflect a VLM verdict a reviewer just rejected (None) without re-reading the queue."""
        qrow = self.q.row_of.get(int(sample_id))
        if qrow is None:
            return
        self.q.vlm[qrow] = VERDICTS.index(verdict) if verdict in VERDICTS else -1
        self.q.vlm_conf[qrow] = np.nan if confidence is None or verdict is None else confidence
        self.set_human(sample_id, VERDICTS[self.q.human[qrow]] if self.q.human[qrow] >= 0 else None)

    def counts(self) -> dict[str, int]:
        st = self._status
        return {
            "total": len(self.q),
            "shown": len(self.order),
            "flagged": int(self.q.flagged.sum()),
            "pending": int((st == 0).sum()),
            "judged": int((st == 1).sum()),
            "reviewed": int((st == 2).sum()),
        }

    # Qt model ---------------------------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.order)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole and section == COL_HARD:
            return HARDNESS_TIP
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = int(self.order[index.row()])
        q = self.q
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_ID:
                return str(int(q.sample_id[r]))
            if col == COL_CLASS:
                return q.classes[q.cls[r]] if q.classes else ""
            if col == COL_IOU:
                v = q.iou[r]
                return "—" if np.isnan(v) else (f"{v:.2f} ⚑" if q.flagged[r] else f"{v:.2f}")
            if col == COL_HARD:
                v = q.hardness[r]
                return "" if np.isnan(v) else f"{v:.3f}"
            if col == COL_VLM:
                return VERDICT_LABEL[VERDICTS[q.vlm[r]]] if q.vlm[r] >= 0 else ""
            if col == COL_CONF:
                v = q.vlm_conf[r]
                return "" if np.isnan(v) else f"{v:.2f}"
            if col == COL_HUMAN:
                if q.human[r] >= 0:
                    return VERDICT_LABEL[VERDICTS[q.human[r]]]
                return STATUSES[self._status[r]]
            return None
        if role == Qt.ItemDataRole.DecorationRole and col == COL_THUMB and self.thumbs is not None:
            return self.thumbs.get(int(q.sample_id[r]), str(q.path[r]))
        if role == Qt.ItemDataRole.BackgroundRole:
            return _STATUS_BRUSH[int(self._status[r])]
        if role == Qt.ItemDataRole.ToolTipRole:
            return str(q.path[r])
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_ID, COL_IOU, COL_HARD, COL_CONF):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.UserRole:
            return int(q.sample_id[r])
        return None

    def _thumb_ready(self, sample_id: int) -> None:
        row = self.row_of_sample(sample_id)
        if row >= 0:
            idx = self.index(row, COL_THUMB)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])

    def close(self) -> None:
        if self.thumbs is not None:
            self.thumbs.close()
