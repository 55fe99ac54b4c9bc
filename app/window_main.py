"""The workbench main window: project handling, the review tab, panels added by other areas, status bar.

`run_gui(project)` is the entry point of `maskbench` with no command. With no project it opens the last one, else
builds (in a worker, with progress) and opens the offline demo project, so a fresh machine shows crops at once.

Panels: `MainWindow.add_panel(name, widget)` adds a tab; a panel that wants the open project either has a
`set_project(project)` method (called on every project change) or listens to `MainWindow.projectOpened`.
Panels listed in `PANEL_FACTORIES` ("module:callable", called with the window) are added at start when their
module imports; a missing optional panel is skipped.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QColor, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QColorDialog,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QTabWidget,
    QWidget,
)

from app.jobs import JobManager
from app.settings import DEFAULT_COLOURS, Settings
from store.errors import ConfigError, UserError
from store.project import CONFIG_NAME, Project
from widgets.palette import LAYER_TITLES
from widgets.review_view import ReviewWidget
from widgets.workers import bridge

if TYPE_CHECKING:
    from inference.predict_flag import PredictFlagOptions

_T0 = time.perf_counter()
log = logging.getLogger("maskbench.gui")
FIRST_RUN_DISMISSED = "firstrun/dismissed"

# Optional panels of other areas: "module:factory", factory(window) -> (name, widget) or a widget; or
# "module:WidgetClass", built with no arguments (the project arrives through set_project).
PANEL_FACTORIES: list[tuple[str, str]] = [
    ("Judge", "widgets.judge_panel:make_panel"),
    ("Training", "widgets.training_panel:make_panel"),
    ("Latency", "widgets.latency_panel:make_panel"),
]
# Panels built for one project ("module:callable", called with the project and `tasks=` the window's TaskHub on every
# project change; the old tab is replaced).
PROJECT_PANEL_FACTORIES: list[tuple[str, str]] = [
    ("Export", "widgets.export_panel:ExportPanel"),
]


def _resolve(spec: str) -> Any:
    """'module:attr' -> the attribute, or None when the module (an optional area) is not there."""
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name and mod_name.startswith(exc.name):
            return None
        log.exception("panel module %s failed to import", mod_name)
        return None
    except Exception:  # noqa: BLE001 - a broken optional panel must not stop the workbench
        log.exception("panel module %s failed to import", mod_name)
        return None
    return getattr(mod, attr, None)


def segmenter_provider(project: Project) -> Callable[[str], Any]:
    """kind -> the project's active segmenter of that kind, loaded on first use (in a worker thread)."""
    from inference.correction_models import load_active_segmenter

    return lambda kind: load_active_segmenter(project, kind)


def embedder_for(project: Project) -> Callable[..., Any] | None:
    from inference.correction_models import make_embedder

    return make_embedder(project)


class MainWindow(QMainWindow):
    projectOpened = Signal(object)  # Project or None

    def __init__(self, settings: Settings | None = None, *, dialogs: bool = True,
                 provider_factory: Callable[[Project], Callable[[str], Any]] | None = None,
                 embedder_factory: Callable[[Project], Any] | None = None, load_panels: bool = True,
                 first_run: bool = False) -> None:
        super().__init__()
        bridge()  # the cross-thread callback object must live in the GUI thread
        self.settings = settings or Settings()
        self.dialogs = dialogs
        self.provider_factory = provider_factory or segmenter_provider
        self.embedder_factory = embedder_factory or embedder_for
        self.project: Project | None = None
        self.first_run = first_run  # show the first-run dialog when there is no last project (run_gui does)
        self.first_run_dialog: Any = None
        self.jobs = JobManager(self)
        self.predict_task: Any = None  # the running Models > Predict and flag, for Stop
        self.setWindowTitle("maskbench")
        self.resize(1500, 900)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.review = ReviewWidget(prefs=self.settings, reviewer=self.settings.reviewer(),
                                   colours=self.settings.colours())
        self.tabs.addTab(self.review, "Review")
        self.setCentralWidget(self.tabs)
        self.panels: dict[str, QWidget] = {"Review": self.review}

        self._build_status()
        self._build_menus()
        self.review.countsChanged.connect(self._counts)
        self.review.sessionChanged.connect(self._session)
        self.review.message.connect(lambda m: self.statusBar().showMessage(m, 6000))
        self.jobs.changed.connect(self._jobs_changed)
        self.jobs.failed.connect(self.show_error)  # "NAME failed: MESSAGE" of any background task
        self.load_panels = load_panels
        if load_panels:
            self._load_panels()
        geometry, state = self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)
        self.tabs.setCurrentIndex(0)

    # panels -------------------------------------------------------------------------------------------------------
    def add_panel(self, name: str, widget: QWidget) -> int:
        """Add a tab (Training, Export, Latency, …); it gets the open project through set_project()."""
        if name in self.panels:
            idx = self.tabs.indexOf(self.panels[name])
            self.tabs.removeTab(idx)
        self.panels[name] = widget
        idx = self.tabs.addTab(widget, name)
        setter = getattr(widget, "set_project", None)
        if callable(setter) and self.project is not None:
            setter(self.project)
        return idx

    def _load_panels(self) -> None:
        for name, spec in PANEL_FACTORIES:
            factory = _resolve(spec)
            if factory is None:
                continue
            try:
                made = factory() if isinstance(factory, type) and issubclass(factory, QWidget) else factory(self)
            except Exception:  # noqa: BLE001
                log.exception("panel %s failed to build", name)
                continue
            if made is None:
                continue
            pname, widget = made if isinstance(made, tuple) else (name, made)
            self.add_panel(pname, widget)

    def _project_panels(self, project: Project | None) -> None:
        if not self.load_panels:
            return
        for name, spec in PROJECT_PANEL_FACTORIES:
            old = self.panels.pop(name, None)
            if old is not None:
                idx = self.tabs.indexOf(old)
                closer = getattr(old, "shutdown", None)
                if callable(closer):
                    closer()
                self.tabs.removeTab(idx)
                old.deleteLater()
            factory = _resolve(spec) if project is not None else None
            if factory is None:
                continue
            try:
                self.add_panel(name, factory(project, tasks=self.jobs))
            except Exception:  # noqa: BLE001
                log.exception("panel %s failed to build", name)

    # status bar ---------------------------------------------------------------------------------------------------
    def _build_status(self) -> None:
        sb = self.statusBar()
        self.counts_label = QLabel("no project")
        self.demo_label = QLabel("")
        self.demo_label.setStyleSheet("color: #D55E00;")
        self.demo_label.hide()
        sb.addWidget(self.demo_label)
        self.session_label = QLabel("")
        self.job_label = QLabel("")
        self.job_bar = QProgressBar()
        self.job_bar.setMaximumWidth(220)
        self.job_bar.setMaximumHeight(16)
        self.job_bar.hide()
        sb.addPermanentWidget(self.job_label)
        sb.addPermanentWidget(self.job_bar)
        sb.addPermanentWidget(self.session_label)
        sb.addPermanentWidget(self.counts_label)

    def _counts(self, c: dict[str, int]) -> None:
        self.counts_label.setText(
            f"{c['total']:,} crops · {c['flagged']:,} flagged · {c['pending']:,} pending · {c['judged']:,} judged · "
            f"{c['reviewed']:,} reviewed")

    def _session(self, count: int, rate: float) -> None:
        self.session_label.setText(f"session {count} · {rate:.0f}/h")

    def _jobs_changed(self) -> None:
        text, done, total = self.jobs.summary()
        if not text:
            self.job_label.setText("")
            self.job_bar.hide()
            return
        self.job_label.setText(text)
        self.job_bar.show()
        if total:
            self.job_bar.setRange(0, total)
            self.job_bar.setValue(done)
        else:
            self.job_bar.setRange(0, 0)  # busy indicator

    # menus --------------------------------------------------------------------------------------------------------
    def _build_menus(self) -> None:
        m = self.menuBar().addMenu("&File")
        self._action(m, "&New project…", self.new_project_dialog, QKeySequence.StandardKey.New)
        self._action(m, "&Open project…", self.open_project_dialog, QKeySequence.StandardKey.Open)
        self.recent_menu = m.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._action(m, "Open &demo project", self.open_demo)
        m.addSeparator()
        self._action(m, "&Ingest data set…", self.ingest_dialog)
        self._action(m, "Import &teacher model…", lambda: self.import_model_dialog("teacher"))
        self._action(m, "Import &student model…", lambda: self.import_model_dialog("student"))
        m.addSeparator()
        self._action(m, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        mm = self.menuBar().addMenu("&Models")
        self._action(mm, "&Predict and flag…", self.predict_dialog, "Ctrl+Shift+P")
        self.stop_predict_action = self._action(mm, "&Stop predicting", self.stop_predicting)
        self.stop_predict_action.setEnabled(False)
        v = self.menuBar().addMenu("&View")
        for layer in DEFAULT_COLOURS:
            self._action(v, f"{LAYER_TITLES[layer].capitalize()} colour…", lambda _c=False, x=layer: self.pick_colour(x))
        self._action(v, "Reset colours (Okabe-Ito)", self.reset_colours)
        h = self.menuBar().addMenu("&Help")
        self._action(h, "Keyboard shortcuts  (?)", lambda: self.review.overlay.toggle())
        self._action(h, "Change keyboard shortcuts…", self.review.edit_shortcuts)

    def _action(self, menu: Any, text: str, fn: Callable[[], Any], key: Any = None) -> QAction:
        act = QAction(text, self)
        if key is not None:
            act.setShortcut(QKeySequence(key))
        act.triggered.connect(lambda _c=False: fn())
        menu.addAction(act)
        return act

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        items = self.settings.recent_projects()
        if not items:
            a = self.recent_menu.addAction("(none)")
            a.setEnabled(False)
        for p in items:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _c=False, path=p: self.open_project(path))

    # projects -----------------------------------------------------------------------------------------------------
    def startup(self, project: str | None) -> None:
        """What run_gui does after showing the window: the given project, the last one, or the demo."""
        if project:
            self.open_project(project)
            return
        last = self.settings.last_project()
        if last and (Path(last) / CONFIG_NAME).exists():
            if self.open_project(last):
                return
        # a fresh machine: the demo opens at once (built in a worker); the first-run dialog offers the other starts
        self.open_demo()
        if self.first_run and not self.settings.get_bool(FIRST_RUN_DISMISSED, False):
            self.show_first_run()

    # first run ----------------------------------------------------------------------------------------------------
    def show_first_run(self) -> Any:
        """The first-run dialog (non-modal to the event loop: opened, never exec'd); returns it."""
        from app.first_run import run_checks
        from widgets.first_run import FirstRunDialog

        dlg = FirstRunDialog(self, checks=run_checks())
        dlg.finished.connect(lambda _r: self._first_run_done(dlg))
        self.first_run_dialog = dlg
        dlg.open()
        return dlg

    def _first_run_done(self, dlg: Any) -> None:
        if dlg.dont_show.isChecked():
            self.settings.set(FIRST_RUN_DISMISSED, True)
        self.first_run_dialog = None
        if dlg.choice == "demo":
            from app.demo import default_demo_dir

            if self.project is None or self.project.root != default_demo_dir().resolve():
                if not any(j.name == "building demo project" for j in self.jobs.running()):
                    self.open_demo()
        elif dlg.choice == "folder" and dlg.path:
            self.open_crops_folder(dlg.path)
        elif dlg.choice == "model" and dlg.path:
            self.open_demo(then=lambda: self.import_model(dlg.kind, dlg.path))
        elif not dlg.choice:
            bad = [c for c in dlg.checks if c.level == "error" and c.name == "data folder"]
            if bad:
                self.show_error(bad[0].text)

    def open_crops_folder(self, folder: str | Path) -> None:
        """A new project for a folder of crops (under the user data folder), then ingest in a worker."""
        from app.first_run import unique_project_dir
        from app.paths import data_dir

        folder = Path(folder)
        if not folder.exists():
            self.show_error(f"folder not found: {folder}")
            return
        root = unique_project_dir(data_dir() / "projects", folder.name or "crops")
        if self.open_project(root, create=True):
            self.ingest(folder)

    def import_model(self, kind: str, path: str | Path) -> None:
        """Verify and import a checkpoint into the open project, in a worker (SAM 2 loads take seconds)."""
        from inference.registry import add_model

        if self.project is None:
            self.show_error("open or create a project first")
            return
        path = Path(path)
        decoder = None
        if kind == "student" and path.suffix.lower() == ".onnx":
            guess = path.with_name(path.name.replace("encoder", "decoder"))
            decoder = guess if guess != path and guess.is_file() else None
        project = self.project
        self.jobs.run(f"importing {kind} {path.name}", add_model, project, kind, path, decoder=decoder,
                      owner=self, on_result=lambda res: self._model_imported(res))

    def _model_imported(self, res: Any) -> None:
        info, existed = res
        self.statusBar().showMessage(f"{info.kind} '{info.name}' {'reactivated' if existed else 'imported'}; "
                                     "run predict to get its masks", 10000)
        if self.project is not None:
            self._set_project(self.project)

    def open_project(self, path: str | Path, create: bool = False) -> bool:
        try:
            project = Project.create(path) if create else Project.open(path)
        except UserError as exc:
            self.show_error(str(exc))
            if not create and not isinstance(exc, ConfigError):  # a project.yaml to fix stays in the recent list
                self.settings.remove_recent_project(path)
            return False
        self._set_project(project)
        return True

    def _demo_banner(self, project: Project | None) -> None:
        """State plainly that the demo models are not SA-1B-pretrained SAM 2 while they are in use."""
        text = ""
        if project is not None:
            try:
                from inference.registry import list_models

                if any(m.active and "not SA-1B" in m.name for m in list_models(project)):
                    text = ("Demo models: trained on synthetic crops only, NOT SA-1B-pretrained SAM 2. "
                            "Import an official checkpoint with File → Import model… or 'maskbench models download'.")
            except Exception:  # noqa: BLE001
                log.exception("could not list the project's models")
        self.demo_label.setText(text)
        self.demo_label.setVisible(bool(text))

    def _set_project(self, project: Project | None) -> None:
        old = self.project
        if old is not None:
            self.stop_predicting()  # it stops between batches; what it stored stays in the old project
            self.review.wait_idle()
        self.project = project
        provider = self.provider_factory(project) if project is not None else None
        embedder = self.embedder_factory(project) if project is not None else None
        self.review.set_project(project, provider, embedder)
        self._demo_banner(project)
        self._project_panels(project)
        for name, w in list(self.panels.items()):
            setter = getattr(w, "set_project", None)
            if name != "Review" and callable(setter):
                try:
                    setter(project)
                except Exception:  # noqa: BLE001 - one panel failing must not keep the project closed
                    log.exception("panel %s could not take the project", name)
        if project is not None:
            self.settings.add_recent_project(project.root)
            self.setWindowTitle(f"maskbench — {project.config.get('name', project.root.name)} ({project.root})")
            self.statusBar().showMessage(f"opened {project.root}", 5000)
        else:
            self.setWindowTitle("maskbench")
        self.projectOpened.emit(project)
        if old is not None and old is not project:
            old.close()

    def open_demo(self, then: Callable[[], Any] | None = None) -> None:
        from app.demo import build_demo_project, default_demo_dir

        root = default_demo_dir()
        if (root / CONFIG_NAME).exists() and (root / "maskbench.sqlite").exists():
            if self.open_project(root) and then is not None:
                then()
            return
        self.statusBar().showMessage("building the demo project (synthetic crops, demo models, offline)…")
        self.jobs.run("building demo project", build_demo_project, root,
                      owner=self, on_result=lambda summary: self._demo_built(root, summary, then))

    def _demo_built(self, root: Path, summary: str, then: Callable[[], Any] | None = None) -> None:
        log.info("%s", summary)
        if self.open_project(root) and then is not None:
            then()
        self.statusBar().showMessage(summary, 8000)

    def new_project_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "New project: choose an empty folder")
        if path:
            self.open_project(path, create=True)

    def open_project_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project folder")
        if path:
            self.open_project(path)

    def ingest_dialog(self) -> None:
        if self.project is None:
            self.show_error("open or create a project first")
            return
        path = QFileDialog.getExistingDirectory(self, "Ingest: data set folder (or cancel and drop a COCO json)")
        if path:
            self.ingest(path)

    def import_model_dialog(self, kind: str) -> None:
        if self.project is None:
            self.show_error("open or create a project first")
            return
        path = QFileDialog.getOpenFileName(self, f"{kind.capitalize()} checkpoint", "",
                                           "Models (*.pt *.pth *.onnx);;All files (*)")[0]
        if path:
            self.import_model(kind, path)

    def ingest(self, dataset: str | Path) -> None:
        from store.ingest import ingest

        if self.project is None:
            return
        db = self.project.db
        self.jobs.run(f"ingesting {Path(dataset).name}", ingest, db, dataset,
                      owner=self, on_result=lambda rep: self._ingested(rep))

    def _ingested(self, report: Any) -> None:
        self.statusBar().showMessage(
            f"ingest ({report.layout}): {report.added_total} added, {report.skipped_existing} already there, "
            f"{len(report.bad)} bad", 10000)
        self.review.reload()

    # predict and flag ---------------------------------------------------------------------------------------------
    def predict_dialog(self) -> None:
        from widgets.predict_dialog import PredictDialog

        if self.project is None:
            self.show_error("open or create a project first")
            return
        dialog = PredictDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        dialog.accepted.connect(lambda: self.predict_and_flag(dialog.options()))
        dialog.open()  # not exec(): the event loop keeps serving the workers

    def predict_and_flag(self, options: PredictFlagOptions) -> Any:
        """Run inference.predict_flag in a worker (status bar progress; Models > Stop predicting). Returns its task."""
        from inference.predict_flag import predict_and_flag

        if self.project is None:
            self.show_error("open or create a project first")
            return None
        task = self.jobs.run("predicting and flagging", predict_and_flag, self.project, options, key="predict",
                             owner=self, on_result=self._predicted)
        self.predict_task = task
        self.stop_predict_action.setEnabled(True)
        for signal in (task.finished, task.failed, task.cancelled):
            signal.connect(lambda *_a, t=task: self._predict_ended(t))
        return task

    def stop_predicting(self) -> None:
        task = self.predict_task
        if task is not None and task.is_active():
            task.cancel()
            self.statusBar().showMessage("stopping after the current batch…", 5000)

    def _predict_ended(self, task: Any) -> None:
        if self.predict_task is task:
            self.predict_task = None
            self.stop_predict_action.setEnabled(False)

    def _predicted(self, report: Any) -> None:
        self.statusBar().showMessage(report.summary(), 15000)
        self.review.reload()

    # colours ------------------------------------------------------------------------------------------------------
    def pick_colour(self, layer: str) -> None:
        c = QColorDialog.getColor(QColor(self.settings.colours()[layer]), self, f"{LAYER_TITLES[layer]} colour")
        if c.isValid():
            self.settings.set_colour(layer, c.name())
            self.review.set_colours(self.settings.colours())

    def reset_colours(self) -> None:
        for layer, colour in DEFAULT_COLOURS.items():
            self.settings.set_colour(layer, colour)
        self.review.set_colours(self.settings.colours())

    # errors and closing -------------------------------------------------------------------------------------------
    def show_error(self, msg: str) -> None:
        log.warning("%s", msg)
        self.statusBar().showMessage(f"error: {msg}", 15000)
        if self.dialogs:
            box = QMessageBox(QMessageBox.Icon.Warning, "maskbench", msg, QMessageBox.StandardButton.Ok, self)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
            box.open()  # not exec(): never block the event loop (workers keep reporting)

    def closeEvent(self, e: QCloseEvent) -> None:
        self.settings.save_window_state(self.saveGeometry(), self.saveState())
        self.jobs.cancel_all()
        self.review.shutdown()
        for name, w in self.panels.items():
            closer = getattr(w, "shutdown", None)
            if name != "Review" and callable(closer):
                try:
                    closer()
                except Exception:  # noqa: BLE001
                    log.exception("panel %s shutdown failed", name)
        if self.project is not None:
            self.project.close()
            self.project = None
        super().closeEvent(e)


def run_gui(project: str | None) -> int:
    """Open the workbench; returns the exit code of the event loop."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    app.setApplicationName("maskbench")
    app.setOrganizationName("maskbench")
    try:
        import assets
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(Path(assets.__file__).resolve().parent / "icons" / "maskbench.png")))
    except Exception:  # noqa: BLE001 - an icon is never worth failing start-up for
        log.debug("no window icon", exc_info=True)
    win = MainWindow(first_run=True)
    win.show()
    if os.environ.get("MASKBENCH_EXIT_AFTER_FIRST_WINDOW"):
        # start-up timing (tests, bundle checks): quit once the first window has been shown and painted
        def _quit() -> None:
            print(f"first window shown: {time.perf_counter() - _T0:.2f} s after import", flush=True)
            win.close()
            app.quit()

        QTimer.singleShot(0, _quit)
        return int(app.exec())
    QTimer.singleShot(0, lambda: win.startup(project))
    return int(app.exec())
