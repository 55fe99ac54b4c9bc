"""The review tab: queue on the left, the crop with its masks in the middle, verdict and correction controls on the
right. Keyboard first: every action has a key (widgets.shortcuts.SHORTCUTS, `?` shows them).

The widget draws and routes keys and signals; review.session.ReviewSession decides and writes: the queue, the crop
shown and its prefetched neighbours, every verdict (written the moment it is given, one transaction each, by a single
writer thread, so writes keep their order and the view moves on without waiting on the disk), undo and corrections.
The widget is the session's listener (the `on_*` methods). Crops load in worker threads (widgets.workers.TaskPool).

Over 450 lines on purpose: what is left is one QWidget's own Qt side, one short method per key, control or session
event (building ~40 controls, the ~30 key actions and their saved keys, view prefs, drawing the crop's details).
Nothing here decides or touches the database any more (review.session); splitting the rest would scatter one
widget's controls, which the window and the GUI tests read by attribute name, over several modules.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from review.queue_data import VERDICT_LABEL, QueueColumns
from review.sample_data import SampleCache, SampleData
from review.session import ReviewSession, SessionStats
from store.project import Project
from widgets.correction import CorrectionController, Embedder, SegmenterProvider
from widgets.mask_view import LAYERS, MaskView
from widgets.palette import LAYER_TITLES, OKABE_ITO_LAYERS
from widgets.queue_view import QueueWidget
from widgets import shortcuts as shortcuts_mod
from widgets.shortcuts import ShortcutOverlay
from widgets.workers import TaskPool

log = logging.getLogger("maskbench.review")

VERDICT_KEYS = {"teacher_better": "T", "student_better": "S", "both_good": "G", "both_bad": "B"}


def swatch(colour: str, size: int = 12) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(QColor(colour))
    return QIcon(pm)


class ReviewWidget(QWidget):
    countsChanged = Signal(dict)
    sessionChanged = Signal(int, float)  # verdicts this session, per hour
    message = Signal(str)
    sampleShown = Signal(int)  # sample id, after the crop and overlays are on screen
    verdictStored = Signal(int, str)  # sample id, verdict or "reject_vlm" (after commit)

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        prefs: Any = None,
        reviewer: str = "reviewer",
        colours: dict[str, str] | None = None,
        thumbnails: bool = True,
    ) -> None:
        super().__init__(parent)
        self.prefs = prefs
        self.project: Project | None = None
        self.loader = TaskPool("samples", workers=2)
        self.writer = TaskPool("verdicts", workers=1)
        self._save_when_decoded = False
        self._stroking = False
        self.last_show_ms: float | None = None
        self._nav_t: float | None = None
        self.correction = CorrectionController(parent=self)

        # centre: the crop
        self.view = MaskView(colours or OKABE_ITO_LAYERS)
        self.view.pointClicked.connect(self._point_clicked)
        self.view.brushStroke.connect(self._brush_stroke)
        self.view.brushFinished.connect(self._brush_done)
        self.view.boxDrawn.connect(self._box_drawn)
        self.correction.maskChanged.connect(self._correction_mask)
        self.correction.pointsChanged.connect(self.view.set_points)
        self.correction.boxChanged.connect(self.view.set_box)
        self.correction.statusChanged.connect(self._correction_status)
        self.correction.autoMasksReady.connect(self._auto_masks_ready)
        self.loading_label = QLabel("", self.view)
        self.loading_label.setStyleSheet("color: white; background: rgba(0,0,0,140); padding: 4px;")
        self.loading_label.move(8, 8)
        self.loading_label.hide()

        # left: the queue
        self.queue = QueueWidget(thumbnails=thumbnails)
        self.queue.currentSampleChanged.connect(self._current_changed)
        self.review_session = ReviewSession(self, self.loader, self.writer, reviewer=reviewer,
                                            upcoming=self.queue.upcoming, owner=self)

        # right: details and controls
        side = self._build_side(colours or OKABE_ITO_LAYERS)
        # the controls scroll rather than set the window's minimum height (a 768 px laptop screen must fit)
        side_scroll = QScrollArea()
        side_scroll.setWidget(side)
        side_scroll.setWidgetResizable(True)
        side_scroll.setFrameShape(QFrame.Shape.NoFrame)
        side_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        side_scroll.setMinimumWidth(side.minimumWidth() + side_scroll.verticalScrollBar().sizeHint().width())
        side_scroll.setMaximumWidth(side.maximumWidth() + side_scroll.verticalScrollBar().sizeHint().width())

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.queue)
        split.addWidget(self.view)
        split.addWidget(side_scroll)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setStretchFactor(2, 0)
        split.setSizes([520, 700, 300])
        split.setChildrenCollapsible(False)
        self.splitter = split
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split)

        self.overlay = ShortcutOverlay(self)
        self.overlay.closed.connect(lambda: self.view.setFocus())
        self.actions_by_name: dict[str, QAction] = {}
        self._build_actions()
        self._restore_prefs()
        self._tick = QTimer(self)
        self._tick.timeout.connect(self._emit_session)
        self._tick.start(15_000)

    # layout -------------------------------------------------------------------------------------------------------
    def _build_side(self, colours: dict[str, str]) -> QWidget:
        side = QWidget()
        side.setMinimumWidth(260)
        side.setMaximumWidth(420)
        v = QVBoxLayout(side)
        v.setContentsMargins(4, 0, 0, 0)

        self.info_label = QLabel("no crop")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        box = QGroupBox("Crop")
        bl = QVBoxLayout(box)
        bl.addWidget(self.info_label)
        bl.addWidget(self.metrics_label)
        v.addWidget(box)

        self.vlm_verdict_label = QLabel("not judged")
        self.vlm_verdict_label.setWordWrap(True)
        self.vlm_reason_label = QLabel("")
        self.vlm_reason_label.setWordWrap(True)
        self.vlm_reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.vlm_reason_label.setStyleSheet("color: palette(text); font-style: italic;")
        box = QGroupBox("VLM judge")
        bl = QVBoxLayout(box)
        bl.addWidget(self.vlm_verdict_label)
        bl.addWidget(self.vlm_reason_label)
        v.addWidget(box)

        box = QGroupBox("Layers")
        gl = QGridLayout(box)
        self.layer_boxes: dict[str, QCheckBox] = {}
        for i, name in enumerate(LAYERS):
            cb = QCheckBox(f"{i + 1}  {LAYER_TITLES[name]}")
            cb.setIcon(swatch(colours.get(name, OKABE_ITO_LAYERS[name])))
            cb.setChecked(True)
            cb.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            cb.toggled.connect(lambda on, n=name: self._set_layer(n, on))
            self.layer_boxes[name] = cb
            gl.addWidget(cb, i // 2, i % 2)
        self.mode_buttons = QButtonGroup(self)
        row = QHBoxLayout()
        for mode, title in (("fill", "fill"), ("contour", "contour"), ("diff", "difference")):
            rb = QRadioButton(title)
            rb.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            rb.setProperty("mode", mode)
            rb.setChecked(mode == "fill")
            self.mode_buttons.addButton(rb)
            row.addWidget(rb)
        self.mode_buttons.buttonClicked.connect(lambda b: self.set_mode(b.property("mode")))
        gl.addLayout(row, 2, 0, 1, 2)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(5, 100)
        self.opacity_slider.setValue(45)
        self.opacity_slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.opacity_slider.valueChanged.connect(self._opacity_changed)
        gl.addWidget(QLabel("opacity"), 3, 0)
        gl.addWidget(self.opacity_slider, 3, 1)
        self.diff_legend = QLabel(
            f"<span style='color:{colours.get('teacher', OKABE_ITO_LAYERS['teacher'])}'>■</span> teacher only "
            f"&nbsp; <span style='color:{colours.get('student', OKABE_ITO_LAYERS['student'])}'>■</span> student only"
            " &nbsp; <span style='color:#bbbbbb'>■</span> both")
        self.diff_legend.hide()
        gl.addWidget(self.diff_legend, 4, 0, 1, 2)
        v.addWidget(box)

        box = QGroupBox("Verdict")
        gl = QGridLayout(box)
        self.verdict_buttons: dict[str, QPushButton] = {}
        for i, (kind, key) in enumerate(VERDICT_KEYS.items()):
            b = QPushButton(f"{VERDICT_LABEL[kind]}  [{key}]")
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(lambda _c=False, k=kind: self.give_verdict(k))
            self.verdict_buttons[kind] = b
            gl.addWidget(b, i // 2, i % 2)
        self.human_label = QLabel("")
        gl.addWidget(self.human_label, 2, 0, 1, 2)
        self.accept_vlm_button = QPushButton("accept VLM  [A]")
        self.reject_vlm_button = QPushButton("reject VLM  [X]")
        for i, (b, fn) in enumerate(((self.accept_vlm_button, self.accept_vlm),
                                     (self.reject_vlm_button, self.reject_vlm))):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(lambda _c=False, f=fn: f())
            gl.addWidget(b, 3, i)
        v.addWidget(box)

        box = QGroupBox("Correct (click: + point, right click: − point)")
        gl = QGridLayout(box)
        self.model_box = QComboBox()
        self.model_box.addItem("student model", "student")
        self.model_box.addItem("teacher model", "teacher")
        self.model_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.model_box.currentIndexChanged.connect(lambda _i: self._model_changed(self.model_box.currentData()))
        gl.addWidget(QLabel("points use"), 0, 0)
        gl.addWidget(self.model_box, 0, 1, 1, 2)
        self.tool_buttons: dict[str, QToolButton] = {}
        tools = QHBoxLayout()
        for tool, title in (("points", "points [P]"), ("box", "box [R]"), ("brush", "brush [D]"),
                            ("eraser", "eraser [E]")):
            b = QToolButton()
            b.setText(title)
            b.setCheckable(True)
            b.setAutoExclusive(True)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(lambda _c=False, t=tool: self.set_tool(t))
            self.tool_buttons[tool] = b
            tools.addWidget(b)
        self.tool_buttons["points"].setChecked(True)
        gl.addLayout(tools, 1, 0, 1, 3)
        self.brush_spin = QSpinBox()
        self.brush_spin.setRange(1, 200)
        self.brush_spin.setValue(6)
        self.brush_spin.setSuffix(" px")
        self.brush_spin.valueChanged.connect(self._brush_radius)
        gl.addWidget(QLabel("brush radius"), 2, 0)
        gl.addWidget(self.brush_spin, 2, 1)
        self.auto_button = QPushButton("auto masks [U]")
        self.auto_button.setToolTip("automatic masks of this crop with the chosen model; U again: next candidate")
        self.auto_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.auto_button.clicked.connect(self.auto_masks)
        gl.addWidget(self.auto_button, 6, 0, 1, 3)  # a row of its own, below the prompt tools: the label fits
        self.save_button = QPushButton("save correction [Enter]")
        self.save_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.save_button.clicked.connect(self.save_correction)
        self.clear_button = QPushButton("clear [Esc]")
        self.clear_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.clear_button.clicked.connect(self.clear_correction)
        gl.addWidget(self.save_button, 3, 0, 1, 2)
        gl.addWidget(self.clear_button, 3, 2)
        self.correction_label = QLabel("")
        self.correction_label.setWordWrap(True)
        gl.addWidget(self.correction_label, 4, 0, 1, 3)
        # teacher-only mask prompts: SAM 2 refines a mask given as its mask input, with any points and box
        self.refine_buttons: dict[str, QPushButton] = {}
        refine = QHBoxLayout()
        for source, title, tip in (
                ("current", "refine mask [C]", "the teacher refines the mask on screen (SAM 2 mask input)"),
                ("ground_truth", "refine GT [⇧C]", "Shift+C: the teacher refines the ground-truth mask")):
            b = QPushButton(title)
            b.setToolTip(tip)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(lambda _c=False, src=source: self.refine_mask(src))
            self.refine_buttons[source] = b
            refine.addWidget(b)
        gl.addLayout(refine, 5, 0, 1, 3)
        v.addWidget(box)

        self.session_label = QLabel("session: 0 verdicts")
        help_label = QLabel("press <b>?</b> for all keys")
        v.addWidget(self.session_label)
        v.addWidget(help_label)
        v.addStretch(1)
        return side

    def _build_actions(self) -> None:
        handlers: dict[str, Callable[[], Any]] = {
            "teacher_better": lambda: self.give_verdict("teacher_better"),
            "student_better": lambda: self.give_verdict("student_better"),
            "both_good": lambda: self.give_verdict("both_good"),
            "both_bad": lambda: self.give_verdict("both_bad"),
            "accept_vlm": self.accept_vlm,
            "reject_vlm": self.reject_vlm,
            "undo": self.undo,
            "next": lambda: self.step(1),
            "prev": lambda: self.step(-1),
            "reload": self.reload,
            "layer_teacher": lambda: self.toggle_layer("teacher"),
            "layer_student": lambda: self.toggle_layer("student"),
            "layer_gt": lambda: self.toggle_layer("gt"),
            "layer_corrected": lambda: self.toggle_layer("corrected"),
            "cycle_mode": lambda: self.set_mode(self.view.cycle_mode()),
            "fit": self.view.fit,
            "zoom_in": lambda: self.view.zoom_by(1.25),
            "zoom_out": lambda: self.view.zoom_by(0.8),
            "tool_points": lambda: self.set_tool("points"),
            "tool_brush": lambda: self.set_tool("brush"),
            "tool_eraser": lambda: self.set_tool("eraser"),
            "tool_box": lambda: self.set_tool("box"),
            "refine_mask": lambda: self.refine_mask("current"),
            "refine_gt": lambda: self.refine_mask("ground_truth"),
            "brush_smaller": lambda: self.brush_spin.setValue(max(1, int(self.brush_spin.value() / 1.3))),
            "brush_bigger": lambda: self.brush_spin.setValue(int(self.brush_spin.value() * 1.3) + 1),
            "switch_model": self.switch_model,
            "auto_masks": self.auto_masks,
            "remove_point": self.remove_last_point,
            "clear_points": self._escape,
            "save_correction": self.save_correction,
            "help": self.overlay.toggle,
        }
        overrides = self._saved_shortcuts()
        self.overlay.entries = shortcuts_mod.effective(overrides)
        for name, keys, desc, _group in self.overlay.entries:
            act = QAction(desc, self)
            act.setShortcuts([QKeySequence(k) for k in keys])
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.setAutoRepeat(name in ("next", "prev", "zoom_in", "zoom_out", "remove_point"))
            act.triggered.connect(handlers[name])
            self.addAction(act)
            self.actions_by_name[name] = act

    def _saved_shortcuts(self) -> dict[str, list[str]]:
        """The user's keys from the settings; a saved set that no longer works (edited by hand) is not used."""
        raw = self.prefs.get(shortcuts_mod.PREFS_KEY, None) if self.prefs is not None else None
        try:
            saved = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            saved = None
        if not isinstance(saved, dict):
            if raw:
                log.warning("saved shortcuts unreadable; the default keys apply")
            return {}
        overrides = {str(k): [str(x) for x in v] for k, v in saved.items() if isinstance(v, list)}
        found = shortcuts_mod.problems(overrides)
        if found:
            log.warning("saved shortcuts not used (%s); the default keys apply", "; ".join(found[:3]))
            return {}
        return overrides

    def apply_shortcuts(self, overrides: dict[str, list[str]]) -> None:
        """Use these keys (only the changed actions need be given) and save them; refuses conflicts."""
        found = shortcuts_mod.problems(overrides)
        if found:
            raise ValueError("; ".join(found))
        self.overlay.entries = shortcuts_mod.effective(overrides)
        for name, keys, _desc, _group in self.overlay.entries:
            self.actions_by_name[name].setShortcuts([QKeySequence(k) for k in keys])
        self._pref(shortcuts_mod.PREFS_KEY, json.dumps(overrides))  # JSON: INI settings lose list types

    def edit_shortcuts(self) -> bool:
        """The shortcuts dialog; True when new keys were applied."""
        dialog = shortcuts_mod.ShortcutsDialog(self._saved_shortcuts(), self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return False
        self.apply_shortcuts(dialog.overrides())
        return True

    def _restore_prefs(self) -> None:
        if self.prefs is None:
            return
        mode = str(self.prefs.get("view/mode", "fill"))
        if mode in ("fill", "contour", "diff"):
            self.set_mode(mode, save=False)
        self.opacity_slider.setValue(int(self.prefs.get_float("view/opacity", 0.45) * 100))
        for name in LAYERS:
            self.layer_boxes[name].setChecked(self.prefs.get_bool(f"view/layer_{name}", True))
        kind = str(self.prefs.get("review/model", "student"))
        self.model_box.setCurrentIndex(max(0, self.model_box.findData(kind)))
        self.brush_spin.setValue(self.prefs.get_int("review/brush_radius", 6))
        sizes = self.prefs.get("review/splitter", None)
        if sizes:
            try:
                self.splitter.setSizes([int(x) for x in sizes])
            except (TypeError, ValueError):
                pass

    def _pref(self, key: str, value: Any) -> None:
        if self.prefs is not None:
            self.prefs.set(key, value)

    def save_layout(self) -> None:
        self._pref("review/splitter", [int(x) for x in self.splitter.sizes()])

    # the session's state, as the view and its tests read it -----------------------------------------------------
    @property
    def current(self) -> SampleData | None:
        return self.review_session.current

    @property
    def current_id(self) -> int | None:
        return self.review_session.current_id

    @property
    def cache(self) -> SampleCache:
        return self.review_session.cache

    @property
    def session(self) -> SessionStats:
        return self.review_session.stats

    @property
    def writes_pending(self) -> int:
        return self.review_session.writes_pending

    @property
    def reviewer(self) -> str:
        return self.review_session.reviewer

    @reviewer.setter
    def reviewer(self, name: str) -> None:
        self.review_session.reviewer = name

    # project ------------------------------------------------------------------------------------------------------
    def set_project(self, project: Project | None, provider: SegmenterProvider | None = None,
                    embedder: Embedder | None = None) -> None:
        self.project = project
        self.review_session.open(project.db if project is not None else None)
        self.view.clear()
        self.correction.provider = provider
        if embedder is not None:
            self.correction.embedder = embedder
        self.correction.forget_model()
        self.queue.set_columns(QueueColumns.empty())
        if project is not None:
            self.reload()

    def reload(self) -> None:
        """Re-read the queue (after a judge run, new predictions, another reviewer's work)."""
        if self.project is None:
            return
        self.loading_label.setText("loading queue…")
        self.loading_label.adjustSize()
        self.loading_label.show()
        self.review_session.reload()

    def on_queue(self, q: QueueColumns, keep: int | None) -> None:
        self.loading_label.hide()
        self.queue.set_columns(q, keep_sample=keep)
        if self.queue.model.rowCount() == 0:
            self._show_empty()
        self._emit_counts()

    def _show_empty(self) -> None:
        self.review_session.go_to(None)
        self.view.clear()
        self.info_label.setText("no crops in this view: ingest a data set (File ▸ Ingest) or change the filters")
        self.metrics_label.setText("")
        self.vlm_verdict_label.setText("")
        self.vlm_reason_label.setText("")

    def _emit_counts(self) -> None:
        self.countsChanged.emit(self.queue.model.counts())

    def on_failed(self, text: str) -> None:
        self.loading_label.hide()
        self.message.emit(text)

    def on_message(self, text: str) -> None:
        self.message.emit(text)

    # showing crops ------------------------------------------------------------------------------------------------
    def _current_changed(self, sample_id: int | None) -> None:
        self._save_when_decoded = False
        if sample_id is None:
            self._show_empty()
            return
        self._nav_t = time.perf_counter()
        self.review_session.go_to(sample_id)

    def on_loading(self, sample_id: int) -> None:
        self.loading_label.setText(f"loading crop {sample_id}…")
        self.loading_label.adjustSize()
        self.loading_label.show()

    def on_embed_ahead(self, data: SampleData) -> None:
        self.correction.ensure_embedding(data.sample_id, data.image, priority=5, image_key=data.sha256)

    def on_sample(self, data: SampleData) -> None:
        self.loading_label.hide()
        self.view.set_sample(data.image, data.masks, keep_view=True)
        self.correction.set_sample(data.sample_id, data.image, data.masks, image_key=data.sha256)
        self._update_side(data)
        if self._nav_t is not None:
            self.last_show_ms = (time.perf_counter() - self._nav_t) * 1000
            self._nav_t = None
        self.sampleShown.emit(data.sample_id)

    def _update_side(self, d: SampleData) -> None:
        split = f" · {d.split}" if d.split else ""
        err = f"<br><span style='color:#D55E00'>{d.error}</span>" if d.error else ""
        self.info_label.setText(f"<b>#{d.sample_id}</b> · {d.defect_class}{split} · "
                                f"{d.image.shape[1]}×{d.image.shape[0]}<br><small>{d.path}</small>{err}")
        m = d.metrics

        def f(v: float | None) -> str:
            return "—" if v is None else f"{v:.3f}"

        if m:
            flag = " <b>⚑ flagged</b>" if d.flagged else ""
            self.metrics_label.setText(
                f"IoU teacher/student {f(m.get('iou_ts'))}{flag}<br>Dice {f(m.get('dice_ts'))} · boundary F "
                f"{f(m.get('boundary_f'))}<br>IoU vs GT: teacher {f(m.get('iou_teacher_gt'))} · student "
                f"{f(m.get('iou_student_gt'))}")
        else:
            have = [LAYER_TITLES[k] for k in ("teacher", "student") if d.masks.get(k) is not None]
            self.metrics_label.setText("no teacher/student comparison yet" + (f" ({', '.join(have)} mask)" if have
                                                                               else ": annotate with points"))
        if d.vlm:
            conf = d.vlm.get("confidence")
            conf_s = f" · confidence {conf:.2f}" if conf is not None else ""
            self.vlm_verdict_label.setText(f"<b>{VERDICT_LABEL.get(d.vlm['verdict'], d.vlm['verdict'])}</b>{conf_s}"
                                           f"<br><small>{d.vlm.get('author', '')}</small>")
            self.vlm_reason_label.setText(d.vlm.get("reason") or "")
        else:
            self.vlm_verdict_label.setText("not judged")
            self.vlm_reason_label.setText("")
        self._update_human_label(d.human)

    def _update_human_label(self, verdict: str | None) -> None:
        self.human_label.setText("your verdict: " + (f"<b>{VERDICT_LABEL.get(verdict, verdict)}</b>" if verdict
                                                      else "none yet"))

    def step(self, delta: int) -> None:
        if self.overlay.isVisible():
            self.overlay.close_overlay()
        if not self.queue.step(delta):
            self.message.emit("end of the queue" if delta > 0 else "start of the queue")

    # view controls ------------------------------------------------------------------------------------------------
    def toggle_layer(self, name: str) -> None:
        self.layer_boxes[name].setChecked(not self.layer_boxes[name].isChecked())

    def _set_layer(self, name: str, on: bool) -> None:
        self.view.set_layer_visible(name, on)
        self._pref(f"view/layer_{name}", on)

    def set_mode(self, mode: str, save: bool = True) -> None:
        if self.view.mode != mode:
            self.view.set_mode(mode)
        for b in self.mode_buttons.buttons():
            b.setChecked(b.property("mode") == mode)
        self.diff_legend.setVisible(mode == "diff")
        if save:
            self._pref("view/mode", mode)

    def _opacity_changed(self, v: int) -> None:
        self.view.set_opacity(v / 100.0)
        self._pref("view/opacity", v / 100.0)

    def set_colours(self, colours: dict[str, str]) -> None:
        self.view.set_colours(colours)
        for name, cb in self.layer_boxes.items():
            if name in colours:
                cb.setIcon(swatch(colours[name]))

    def set_tool(self, tool: str) -> None:
        if tool == "box":
            self._use_teacher("box")
        self.view.set_tool(tool)
        self.tool_buttons[tool].setChecked(True)

    def _use_teacher(self, what: str) -> None:
        """Box and mask prompts are the teacher's (the student takes points only): switch the model, and say so."""
        if self.correction.kind != "teacher":
            self.model_box.setCurrentIndex(max(0, self.model_box.findData("teacher")))
            self.message.emit(f"{what} prompts use the teacher model (M switches back to the student)")

    def _brush_radius(self, r: int) -> None:
        self.view.set_brush_radius(r)
        self.correction.brush_radius = r
        self._pref("review/brush_radius", r)

    def switch_model(self) -> None:
        self.model_box.setCurrentIndex(1 - self.model_box.currentIndex())

    def _model_changed(self, kind: str) -> None:
        self.correction.set_kind(kind)
        self._pref("review/model", kind)

    # verdicts: the session writes, the view follows ---------------------------------------------------------------
    def give_verdict(self, kind: str) -> None:
        self.review_session.give_verdict(kind)

    def accept_vlm(self) -> None:
        """A: the VLM judge's verdict becomes the reviewer's, then the next crop."""
        self.review_session.accept_vlm()

    def reject_vlm(self) -> None:
        """X: the VLM judge's verdict stops counting and the crop stays pending for a human verdict; the view moves
        on. Ctrl+Z takes a rejection back."""
        self.review_session.reject_vlm()

    def undo(self) -> None:
        self.review_session.undo()

    def on_verdict(self, sid: int, kind: str) -> None:
        self.queue.model.set_human(sid, kind)
        self._emit_session()
        self._emit_counts()
        self._next(f"#{sid}: {VERDICT_LABEL.get(kind, kind)}", lambda: self._update_human_label(kind))

    def on_vlm_rejected(self, sid: int, vlm_verdict: str) -> None:
        self.queue.model.set_vlm(sid, None)
        self._emit_counts()
        self._emit_session()
        self._next(f"#{sid}: VLM verdict {VERDICT_LABEL.get(vlm_verdict, vlm_verdict)} rejected, still pending",
                   self._redraw_side)

    def _redraw_side(self) -> None:
        if self.current is not None:
            self._update_side(self.current)

    def _next(self, msg: str, at_end: Callable[[], Any]) -> None:
        """After a verdict: say it, and move to the next crop (at the end of the queue, redraw this one)."""
        self.message.emit(msg)
        if not self.queue.step(1):
            at_end()
            self.message.emit(f"{msg} — end of the queue")

    def on_stored(self, sid: int, kind: str) -> None:
        self.verdictStored.emit(sid, kind)

    def on_stats(self) -> None:
        self._emit_session()

    def on_standing(self, sid: int, verdict: str | None) -> None:
        self.queue.model.set_human(sid, verdict)
        self._emit_counts()
        if sid == self.current_id:
            self._update_human_label(verdict)

    def on_undone(self, sid: int, reason: str, standing: str | None) -> None:
        self._emit_session()
        self.queue.model.set_human(sid, standing)
        self._emit_counts()
        self.message.emit(f"#{sid}: {reason}")
        if self.current_id == sid:
            self._current_changed(sid)
        elif not self.queue.select_sample(sid):
            self.message.emit(f"#{sid}: {reason} (not in the current filter)")

    def _emit_session(self) -> None:
        rate = self.session.per_hour()
        self.session_label.setText(f"session: <b>{self.session.count}</b> verdicts · {rate:.0f} / hour")
        self.sessionChanged.emit(self.session.count, rate)

    # correction ---------------------------------------------------------------------------------------------------
    def _point_clicked(self, x: float, y: float, label: int) -> None:
        if self.current is None:
            return
        self.correction.add_point(x, y, label)

    def _brush_stroke(self, x0: float, y0: float, x1: float, y1: float, paint: bool) -> None:
        if self.current is None:
            return
        new = x0 == x1 and y0 == y1 and not self._stroking
        self._stroking = True
        self.correction.brush(x0, y0, x1, y1, paint, new_stroke=new)

    def _brush_done(self) -> None:
        self._stroking = False

    def _box_drawn(self, x0: float, y0: float, x1: float, y1: float) -> None:
        if self.current is None:
            return
        self._use_teacher("box")
        self.correction.set_box(x0, y0, x1, y1)

    def refine_mask(self, source: str) -> None:
        """C / Shift+C: give the teacher a mask as SAM 2's mask input, to refine with any points and box: the mask on
        screen ("current": the correction, else the saved correction, else the teacher's prediction) or the ground
        truth ("ground_truth")."""
        if self.current is None or self.current.sample_id != self.current_id:
            self.message.emit("wait for the crop to show first")
            return
        masks = self.current.masks
        if source == "ground_truth":
            mask, what = masks.get("gt"), "ground-truth"
        else:
            mask = self.correction.current_mask()
            for name in ("corrected", "teacher"):
                mask = masks.get(name) if mask is None else mask
            what = "current"
        if mask is None:
            self.message.emit(f"#{self.current.sample_id}: no {what} mask to refine")
            return
        self._use_teacher("mask")
        if self.correction.set_mask_prompt(mask, source):
            self.message.emit(f"#{self.current.sample_id}: the teacher refines the {what} mask; add points or a box")

    def _correction_mask(self, mask: np.ndarray | None) -> None:
        if self.current is None:
            return
        if mask is None:
            self.view.set_mask("corrected", self.current.masks.get("corrected"))
        else:
            self.view.set_mask("corrected", mask)
            if not self.layer_boxes["corrected"].isChecked():
                self.layer_boxes["corrected"].setChecked(True)
        if self._save_when_decoded and not self.correction.decoding():
            self._save_when_decoded = False
            self.save_correction()

    def auto_masks(self) -> None:
        """U: automatic masks of the crop on screen with the chosen correction model (the first press searches in a
        worker, each further press shows the next candidate)."""
        if self.current is None or self.current.sample_id != self.current_id:
            self.message.emit("wait for the crop to show first")
            return
        self.correction.request_auto()

    def _auto_masks_ready(self, sid: int, kind: str, n: int) -> None:
        if n:
            self.message.emit(f"#{sid}: {n} automatic mask(s) from the {kind}; U: next, Enter: save")
        else:
            self.message.emit(f"#{sid}: no automatic mask from the {kind} passed the filters")

    def _correction_status(self, text: str) -> None:
        self.correction_label.setText(text)

    def remove_last_point(self) -> None:
        self.correction.remove_last()

    def clear_correction(self) -> None:
        self.correction.clear()

    def _escape(self) -> None:
        if self.overlay.isVisible():
            self.overlay.close_overlay()
        else:
            self.clear_correction()

    def save_correction(self) -> None:
        if self.project is None or self.current is None:
            return
        if self.correction.decoding():
            self._save_when_decoded = True
            self.message.emit("saving when the mask is ready…")
            return
        mask = self.correction.current_mask()
        if mask is None:
            self.message.emit("nothing to save: click points or paint first")
            return
        # the prompts and the model's answer behind the mask, stored with it in the same transaction (replayable)
        self.review_session.save_correction(mask, self.correction.prompt_record())

    # lifecycle ----------------------------------------------------------------------------------------------------
    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until queued verdict writes are done (used when closing the window)."""
        return self.review_session.wait_idle(timeout_s)

    def shutdown(self) -> None:
        self.save_layout()
        self.wait_idle()
        self.writer.close()
        self.loader.close()
        self.correction.close()
        self.queue.close_workers()

    def keyPressEvent(self, e: Any) -> None:  # noqa: ANN401 - Qt signature
        # "?" arrives as Shift+? on some platforms, where the "?" shortcut does not match: take it here too.
        if e.key() == Qt.Key.Key_Question:
            self.overlay.toggle()
            e.accept()
            return
        super().keyPressEvent(e)

    def resizeEvent(self, e: Any) -> None:  # noqa: ANN401 - Qt signature
        super().resizeEvent(e)
        if self.overlay.isVisible():
            self.overlay.setGeometry(self.rect())
