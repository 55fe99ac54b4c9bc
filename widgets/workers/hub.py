"""TaskHub: where a window's background work starts, is superseded, cancelled and summed up for the status bar.

Why a hub and not each panel on its own: the status bar needs one place that knows every running task and its
progress (`changed`, `summary()`), every failure needs to reach it as one readable line (`failed`), and closing the
window cancels everything (`cancel_all()`). Keys make superseding a one-liner: a task started with the key of one
still active asks the old one to stop, and the old one's result is dropped (it ends `cancelled`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from widgets.workers.tasks import FAILED, ProcessTask, Task, ThreadTask


def _guarded(cb: Callable[..., Any], owner: QObject | None) -> Callable[..., Any]:
    if owner is None:
        return cb

    def call(*args: Any) -> None:
        if shiboken6.isValid(owner):
            cb(*args)

    return call


class TaskHub(QObject):
    changed = Signal()  # a task started, ended or reported progress
    failed = Signal(str)  # "NAME failed: MESSAGE" of a task that is not quiet, for the status bar

    def __init__(self, parent: QObject | None = None, pool: QThreadPool | None = None) -> None:
        super().__init__(parent)
        self.pool = pool
        self.tasks: list[Task] = []  # active, oldest first
        self._keys: dict[str, Task] = {}

    def run(self, name: str, fn: Callable[..., Any], *args: Any, key: str | None = None, quiet: bool = False,
            on_result: Callable[[Any], None] | None = None, on_error: Callable[[str], None] | None = None,
            on_progress: Callable[[int, int], None] | None = None, owner: QObject | None = None,
            **kwargs: Any) -> ThreadTask:
        """Run fn(*args, **kwargs) on the thread pool (see ThreadTask for `progress=`, `cancel=`, `log=`). The
        on_* callbacks are connected to the task's signals, and skipped once `owner` is deleted."""
        task = ThreadTask(name, fn, args, kwargs, key=key, quiet=quiet, pool=self.pool)
        self._adopt(task, on_result, on_error, on_progress, owner)
        task.start()
        return task

    def process(self, name: str, program: str, args: Sequence[str], *, key: str | None = None, quiet: bool = False,
                env: Mapping[str, str] | None = None, cwd: str | None = None, merge_channels: bool = False,
                stop_grace_ms: int = 0, on_result: Callable[[Any], None] | None = None,
                on_error: Callable[[str], None] | None = None, owner: QObject | None = None) -> ProcessTask:
        """Run `program args` as a ProcessTask. It starts on the next event loop turn, so connect to its signals
        (output, errorOutput, …) right after this returns; it is active (pending) until then."""
        task = ProcessTask(name, program, args, key=key, quiet=quiet, env=env, cwd=cwd,
                           merge_channels=merge_channels, stop_grace_ms=stop_grace_ms)
        self._adopt(task, on_result, on_error, None, owner)
        QTimer.singleShot(0, task.start)
        return task

    def _adopt(self, task: Task, on_result: Callable[[Any], None] | None, on_error: Callable[[str], None] | None,
               on_progress: Callable[[int, int], None] | None, owner: QObject | None) -> None:
        if task.key is not None:
            old = self._keys.get(task.key)
            if old is not None and old.is_active():
                old.supersede()
            self._keys[task.key] = task
        self.tasks.append(task)
        # the hub's bookkeeping first: inside a callback, running() and summary() already leave the task out
        for signal in (task.finished, task.failed, task.cancelled):
            signal.connect(lambda *_a, t=task: self._ended(t))
        task.progress.connect(lambda *_a: self.changed.emit())
        if on_result is not None:
            task.finished.connect(_guarded(on_result, owner))
        if on_error is not None:
            task.failed.connect(_guarded(on_error, owner))
        if on_progress is not None:
            task.progress.connect(_guarded(on_progress, owner))
        self.changed.emit()

    def _ended(self, task: Task) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        if task.key is not None and self._keys.get(task.key) is task:
            del self._keys[task.key]
        if task.state == FAILED and not task.quiet:
            self.failed.emit(f"{task.name} failed: {task.error}")
        self.changed.emit()

    def running(self) -> list[Task]:
        return list(self.tasks)

    def active(self, key: str) -> Task | None:
        """The active task holding key, if any."""
        task = self._keys.get(key)
        return task if task is not None and task.is_active() else None

    def drop(self, key: str) -> None:
        """Supersede the active task holding key, if any: its result is dropped."""
        task = self.active(key)
        if task is not None:
            task.supersede()

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    def summary(self) -> tuple[str, int, int]:
        """(text, done, total) for one progress bar over every running task that is not quiet."""
        tasks = [t for t in self.tasks if not t.quiet]
        if not tasks:
            return "", 0, 0
        if len(tasks) == 1:
            t = tasks[0]
            text = f"{t.name} {t.done}/{t.total}" if t.total else t.name
            return text, t.done, t.total
        done = sum(t.done for t in tasks if t.total)
        total = sum(t.total for t in tasks if t.total)
        return f"{len(tasks)} jobs: " + ", ".join(t.name for t in tasks), done, total
